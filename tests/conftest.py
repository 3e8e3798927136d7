"""Keep every test offline and its caches inside a per-session temporary folder."""

import os
import tempfile


# Set before anything imports `datasets` or `transformers`: both read these at import time.
_CACHE = tempfile.mkdtemp(prefix="kd_hf_tests_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ["MPLCONFIGDIR"] = os.path.join(_CACHE, "matplotlib")
os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHE, "xdg")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")


import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def assert_switch_keeps_explanations(monkeypatch, variable: str, values, bert, vit, tokenizer) -> None:
    """Integrated gradients of three texts (`bert`) and three images (`vit`) have the same targets, scores and deltas
    with the environment `variable` at each of two `values` (`None`: unset)."""
    from kd_hf.explain import explain_images, explain_text

    texts, pixels = ["a great film", "dull and interminably overlong", "so so"], torch.randn(3, 1, 8, 8)
    for explain in (
        lambda: explain_text(bert, tokenizer, texts, n_steps=8),
        lambda: explain_images(vit, pixels, n_steps=8),
    ):
        runs = []
        for value in values:
            if value is None:
                monkeypatch.delenv(variable, raising=False)
            else:
                monkeypatch.setenv(variable, value)
            runs.append(explain())
        for a, b in zip(*runs):
            assert a.target == b.target
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
            assert a.delta == pytest.approx(b.delta, abs=1e-5)


POSITIVE = ["good", "great", "fine", "superb", "lovely", "moving", "funny", "smart"]
NEGATIVE = ["bad", "dull", "awful", "boring", "weak", "messy", "flat", "tired"]


def sentiment_rows(n: int, seed: int = 0) -> dict[str, list]:
    """Short synthetic reviews whose label follows the sentiment words in them: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        picks = torch.randint(len(words), (3,), generator=generator).tolist()
        texts.append(f"a {words[picks[0]]} and {words[picks[1]]} film, {words[picks[2]]} cast")
        labels.append(label)
    return {"text": texts, "label": labels}


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from kd_hf.data.offline import offline_model_path

    return AutoTokenizer.from_pretrained(offline_model_path("offline:all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def word_tokenizer():
    """A second vocabulary: whole words, [CLS] ... [SEP], padded on the left with id 1 (unlike MiniLM's 0, right)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = POSITIVE + NEGATIVE + "a and film , cast quiet triumph interminably overlong the is mess warm wise".split()
    vocab = {token: i for i, token in enumerate(["[UNK]", "[PAD]", "[CLS]", "[SEP]", *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        padding_side="left",
    )


@pytest.fixture
def make_bert():
    """Build a tiny BERT classifier from config (MiniLM's vocabulary), deterministic for a given seed."""
    from transformers import BertConfig, BertForSequenceClassification

    def make(layers=2, labels=("negative", "positive"), seed=0, hidden=32, heads=2, dropout=0.0, vocab_size=30522):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            max_position_embeddings=64,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        return BertForSequenceClassification(config).eval()

    return make


@pytest.fixture
def make_vit():
    """Build a tiny ViT classifier for 8x8 one-channel digits."""
    from transformers import ViTConfig, ViTForImageClassification

    def make(layers=2, hidden=32, seed=0, labels=tuple(str(d) for d in range(10))):
        torch.manual_seed(seed)
        config = ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        return ViTForImageClassification(config).eval()

    return make


@pytest.fixture(scope="session")
def text_dataset(minilm_tokenizer):
    """32 tokenised training and 16 evaluation examples for the tiny BERT models, built once (half a second each time):
    `map`, `select`, `with_transform` return new datasets; no test may change these in place (`set_format`)."""
    import datasets

    from kd_hf.data import tokenize_for_pair

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    train = datasets.Dataset.from_dict(sentiment_rows(32, seed=0), features=features)
    evaluation = datasets.Dataset.from_dict(sentiment_rows(16, seed=1), features=features)
    return tuple(tokenize_for_pair(split, minilm_tokenizer, max_length=32) for split in (train, evaluation))


@pytest.fixture
def distill_args(tmp_path):
    """A factory of `DistillationConfig`s for fast, deterministic, offline runs."""
    from kd_hf import DistillationConfig

    def make(**overrides):
        defaults = dict(
            output_dir=str(tmp_path / "run"),
            max_steps=2,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            learning_rate=1e-3,
            report_to=[],
            logging_steps=1,
            save_strategy="no",
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        return DistillationConfig(**{**defaults, **overrides})

    return make


@pytest.fixture
def tiny_text_project(tmp_path, make_bert, minilm_tokenizer):
    """A tiny teacher folder, a CSV dataset with string labels, and a recipe that distils the one on the other."""
    import csv

    import yaml

    teacher = make_bert(layers=2, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    minilm_tokenizer.save_pretrained(tmp_path / "teacher")
    for split, n, seed in (("train", 32, 0), ("validation", 16, 1)):
        rows = sentiment_rows(n, seed)
        with open(tmp_path / f"{split}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows(
                (text, ("negative", "positive")[label]) for text, label in zip(rows["text"], rows["label"])
            )

    def write_recipe(name="recipe.yaml", **fields):
        recipe = {
            "teacher_model_name_or_path": str(tmp_path / "teacher"),
            "model_init": "teacher_layers",
            "teacher_layers_stride": 2,
            "dataset_name": "csv",
            "data_files": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "validation.csv")},
            "max_length": 32,
            "output_dir": str(tmp_path / "student"),
            "max_steps": 4,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 2,
            "use_cpu": True,
            "report_to": "none",
            "disable_tqdm": True,
            **fields,
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write_recipe


@pytest.fixture(scope="session")
def hub_backend():
    """The loopback Hub server of `tests/hub_server.py`, one for the session; tests use `hub_server`."""
    from hub_server import HubServer

    with HubServer() as server:
        yield server


@pytest.fixture
def hub_server(hub_backend, monkeypatch, tmp_path):
    """An empty loopback Hub, with `huggingface_hub` and `transformers` pointed at it (online, its token in
    `HF_TOKEN`, downloads into a fresh cache) for this test; read pushed files back with `hub_server.files(repo_id)`."""
    from hub_server import point_client_at

    hub_backend.reset()
    point_client_at(monkeypatch, hub_backend.url, cache_dir=tmp_path / "hub_cache", token=hub_backend.token)
    return hub_backend


@pytest.fixture
def dead_endpoint(monkeypatch, tmp_path):
    """A Hub that is down: `huggingface_hub` and `transformers` pointed at a loopback port that refuses
    connections, as `hub_server` does for a live one, with the client's retry waits skipped (a failing download
    is reported at once, not after ~23 s); the value is that endpoint's URL."""
    from hub_server import TOKEN, closed_port_url, point_client_at, skip_retry_waits

    with closed_port_url() as url:
        point_client_at(monkeypatch, url, cache_dir=tmp_path / "hub_cache", token=TOKEN)
        skip_retry_waits(monkeypatch)
        yield url


@pytest.fixture
def silent_endpoint(monkeypatch, tmp_path):
    """A Hub that accepts connections and never answers: `huggingface_hub` and `transformers` pointed at a loopback
    port that listens and never reads, as `dead_endpoint` does for one that refuses them (retry waits skipped too);
    the value is that endpoint's URL."""
    from hub_server import TOKEN, point_client_at, silent_port_url, skip_retry_waits

    with silent_port_url() as url:
        point_client_at(monkeypatch, url, cache_dir=tmp_path / "hub_cache", token=TOKEN)
        skip_retry_waits(monkeypatch)
        yield url
