"""TinyBERT-style augmentation of a text transfer set (issue 14, lever 1)."""

import datasets
import pytest
import torch

from kd_hf.data import augment
from kd_hf.data.augment import UNLABELLED, augment_texts, embedding_neighbours


TEXTS = ["a great and moving film", "a dull , overlong mess", "the cast is warm and wise"]


@pytest.fixture
def tiny_embeddings(minilm_tokenizer):
    torch.manual_seed(0)
    return torch.randn(len(minilm_tokenizer), 16)


def _dataset():
    return datasets.Dataset.from_dict(
        {"text": TEXTS, "label": [1, 0, 1]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["n", "p"])}),
    )


def test_neighbours_are_the_nearest_words_by_cosine():
    vocabulary = {"good": 0, "great": 1, "bad": 2, "awful": 3}
    embeddings = torch.tensor([[1.0, 0.1], [0.9, 0.2], [-1.0, 0.1], [-0.8, -0.1]])
    neighbours = embedding_neighbours(["good", "awful", "unknown"], vocabulary, embeddings, k=2)
    assert neighbours == {"good": ["great", "bad"], "awful": ["bad", "great"]}


def test_variants_follow_the_originals_unlabelled(minilm_tokenizer, tiny_embeddings):
    out = augment_texts(_dataset(), minilm_tokenizer, tiny_embeddings, ["text"], copies=2, word_prob=0.5)
    assert len(out) == 3 * 3
    assert out["text"][:3] == TEXTS and out["label"][:3] == [1, 0, 1]  # the labelled originals, ids kept
    assert out["label"][3:] == [UNLABELLED] * 6  # the teacher's soft labels alone
    variants = out["text"][3:]
    assert variants != [text for text in TEXTS for _ in range(2)]  # some words changed
    assert all(len(v.split()) == len(t.split()) for v, t in zip(variants, [t for t in TEXTS for _ in range(2)]))


def test_masking_alone_masks_every_word(minilm_tokenizer, tiny_embeddings):
    out = augment_texts(_dataset(), minilm_tokenizer, tiny_embeddings, ["text"], copies=1, word_prob=0, mask_prob=1)
    assert out["text"][3] == "[MASK] [MASK] [MASK] [MASK] [MASK]"
    assert out["text"][4] == "[MASK] [MASK] , [MASK] [MASK]"  # punctuation stays


def test_augmentation_is_deterministic_per_seed(minilm_tokenizer, tiny_embeddings):
    def run(seed):
        return augment_texts(_dataset(), minilm_tokenizer, tiny_embeddings, ["text"], copies=3, seed=seed)["text"]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_a_second_run_reads_the_variants_from_the_cache(tmp_path, minilm_tokenizer, tiny_embeddings, monkeypatch):
    rows = [f'"{text}",{i % 2}' for i, text in enumerate(TEXTS)]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows))

    def load():
        return datasets.load_dataset("csv", data_files=str(tmp_path / "train.csv"), cache_dir=str(tmp_path / "c"))

    first = augment_texts(load()["train"], minilm_tokenizer, tiny_embeddings, ["text"], copies=2)
    made = []
    original = augment._variant
    monkeypatch.setattr(augment, "_variant", lambda *args: made.append(1) or original(*args))
    second = augment_texts(load()["train"], minilm_tokenizer, tiny_embeddings, ["text"], copies=2)
    assert made == []  # nothing computed again
    assert second["text"] == first["text"]
    # Other settings are another cache entry.
    augment_texts(load()["train"], minilm_tokenizer, tiny_embeddings, ["text"], copies=2, word_prob=0.2)
    assert made


@pytest.mark.slow
def test_distill_trains_on_the_augmented_transfer_set(tiny_text_project, tmp_path, caplog):
    from kd_hf.cli import main

    recipe = tiny_text_project(augment_copies=2, teacher_cache=True, max_steps=2, explanation_examples=0)
    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(recipe)])
    assert "Training on 96 examples: 32 labelled, 64 augmented." in caplog.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"augment_copies": -1}, "augment_copies` must be >= 0"),
        ({"augment_copies": 2, "augment_word_prob": 0.8, "augment_mask_prob": 0.3}, "sum <= 1"),
        ({"augment_copies": 2, "image_column": "image", "text_columns": []}, "augments texts"),
    ],
)
def test_bad_augmentation_settings_are_refused(tmp_path, fields, message):
    from kd_hf import DistillationConfig

    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir=str(tmp_path), report_to=[], **fields)
