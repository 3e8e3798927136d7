"""`kd_hf.export`: ONNX and int8 graphs of tiny config-built students, their parity with PyTorch, and `kd-hf export`.

A test that exports is marked `slow`: torch.export traces even a 2-layer model for about 7 s on two busy cores (the
module's fixtures export each tiny student once), and the first export imports the exporter (about 10 s more).
"""

import contextlib
import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import sentiment_rows


LABELS = ("negative", "positive")
TEXTS = [
    "a quiet triumph",
    "an interminably overlong and messy film , the cast is tired",
    "warm",
    "the film is a mess but the cast is warm and wise",
    "good",
]


def _tiny_bert(seed: int, **config):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    # A wide initialisation: a default one (0.02) gives every input nearly the same logits, whose order int8 noise
    # would decide.
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2, num_labels=2,
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)}, **config,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def text_student(tmp_path_factory, minilm_tokenizer):
    """A tiny BERT student folder as `kd-hf distill` leaves it (weights, tokenizer, recipe, report), beside its tiny
    teacher and the CSV splits it was evaluated on."""
    root = tmp_path_factory.mktemp("text")
    for name, seed in (("student", 0), ("teacher", 1)):
        _tiny_bert(seed).save_pretrained(root / name)
        minilm_tokenizer.save_pretrained(root / name)
    for split, n, seed in (("train", 16, 0), ("validation", 24, 1), ("test", 20, 2)):
        rows = sentiment_rows(n, seed)
        with open(root / f"{split}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows((text, LABELS[label]) for text, label in zip(rows["text"], rows["label"]))
    recipe = {
        "dataset_name": "csv", "max_length": 32, "seed": 0, "eval_split": "validation", "report_split": "test",
        "data_files": {split: str(root / f"{split}.csv") for split in ("train", "validation", "test")},
        "teacher_model_name_or_path": str(root / "teacher"), "job": "distill", "learning_rate": 0.001,
    }  # fmt: skip
    (root / "student" / "kd_hf_recipe.json").write_text(json.dumps(recipe))
    report = {"dataset": {"name": "csv", "split": "test", "num_examples": 20}, "student": {}}
    (root / "student" / "eval_results.json").write_text(json.dumps(report))
    return root / "student"


@pytest.fixture(scope="module")
def exported_text(text_student):
    from kd_hf.export import export_onnx

    return export_onnx(str(text_student), quantize="int8")


@pytest.fixture(scope="module")
def vit_student(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, initializer_range=0.2, num_labels=10, id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("vision") / "student"
    ViTForImageClassification(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported_vit(vit_student):
    from kd_hf.export import export_onnx

    return export_onnx(str(vit_student), quantize="int8")


def _torch_logits(folder, image=False, **inputs):
    from kd_hf.models import load_model

    with torch.no_grad():
        return load_model(str(folder), image)(**inputs).logits.numpy()


@pytest.mark.slow
def test_text_graph_matches_torch_at_a_batch_size_and_length_not_seen_at_export(
    text_student, exported_text, minilm_tokenizer
):
    from kd_hf.export import OnnxClassifier

    assert exported_text.input_names == ("input_ids", "attention_mask", "token_type_ids")
    classifier = OnnxClassifier(exported_text.model_path)
    [ids, *_] = classifier.session.get_inputs()
    assert ids.shape == ["batch", "sequence"] and classifier.session.get_outputs()[0].name == "logits"
    encoded = minilm_tokenizer(TEXTS, padding=True, return_tensors="pt")  # 5 rows of 14 tokens, padded; traced: 2 x 8
    assert encoded["input_ids"].shape[0] == 5 and encoded["input_ids"].shape[1] not in (8, 11)
    expected = _torch_logits(text_student, **encoded)
    np.testing.assert_allclose(classifier.logits(encoded), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_vit_graph_matches_torch_at_a_batch_size_not_seen_at_export(vit_student, exported_vit):
    from kd_hf.export import OnnxClassifier

    assert exported_vit.input_names == ("pixel_values",)
    pixels = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    logits = OnnxClassifier(exported_vit.model_path).logits({"pixel_values": pixels})
    np.testing.assert_allclose(logits, _torch_logits(vit_student, True, pixel_values=pixels), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_int8_text_graph_runs_and_agrees_with_torch_on_most_examples(text_student, exported_text, minilm_tokenizer):
    from kd_hf.export import QUANTIZED_FILE, OnnxClassifier

    assert os.path.basename(exported_text.quantized_path) == QUANTIZED_FILE  # transformers.js's name for q8
    assert exported_text.quantization["weight_type"] == "int8"
    texts = sentiment_rows(32, seed=5)["text"]
    encoded = minilm_tokenizer(texts, padding=True, return_tensors="pt")
    expected = _torch_logits(text_student, **encoded).argmax(-1)
    predicted = OnnxClassifier(exported_text.quantized_path).logits(encoded).argmax(-1)
    assert (predicted == expected).mean() >= 0.8
    assert os.path.getsize(exported_text.quantized_path) < os.path.getsize(exported_text.model_path) / 2


@pytest.mark.slow
def test_published_graphs_carry_no_stack_traces_of_this_machine(exported_text):
    import onnx

    for path in (exported_text.model_path, exported_text.quantized_path):
        graph = onnx.load(path).graph
        assert not [node.name for node in graph.node if node.metadata_props]
        assert not graph.value_info  # intermediate shapes, which onnxruntime infers
        onnx.checker.check_model(path)
        with open(path, "rb") as file:
            assert b"site-packages" not in file.read()


@pytest.mark.slow
def test_int8_vit_graph_has_uint8_weights_and_runs(exported_vit):
    from kd_hf.export import OnnxClassifier

    # A graph with a convolution (ViT's patch embedding) gets uint8 weights, which onnxruntime-web can run.
    assert exported_vit.quantization["weight_type"] == "uint8"
    logits = OnnxClassifier(exported_vit.quantized_path).logits({"pixel_values": torch.zeros(3, 1, 8, 8)})
    assert logits.shape == (3, 10) and np.isfinite(logits).all()


@pytest.mark.slow
def test_int8_graph_stores_its_remaining_large_fp32_tensors_in_int8_under_short_names(exported_vit, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    import onnx
    from onnx import numpy_helper

    from kd_hf.export import OnnxClassifier, quantize
    from kd_hf.export.quantize import quantize_int8

    # The tiny ViT's position embeddings (5 x 32 values) are read by an `Add`, not by a quantised operator.
    settings = {**exported_vit.quantization, "weight_only_min_elements": 128}
    quantize_int8(exported_vit.model_path, str(tmp_path / "compact.onnx"), settings)
    graph = onnx.load(tmp_path / "compact.onnx").graph
    large = {t.name: numpy_helper.to_array(t) for t in graph.initializer if np.prod(t.dims) >= 128}
    assert large and all(values.dtype in (np.uint8, np.int8) for values in large.values())
    dequantized = [large[node.input[0]].shape for node in graph.node if node.op_type == "DequantizeLinear"]
    assert (1, 5, 32) in dequantized
    names = {name for node in graph.node for name in [*node.input, *node.output]} - {"pixel_values", "logits", ""}
    assert names and all(re.fullmatch(r"v\d+", name) for name in names)
    pixels = {"pixel_values": torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))}
    compact = OnnxClassifier(str(tmp_path / "compact.onnx")).logits(pixels)
    fp32 = OnnxClassifier(exported_vit.model_path).logits(pixels)
    assert np.abs(compact - fp32).max() < 0.2  # logits up to 2.1; the int8 graph without compaction is 0.10 off
    monkeypatch.setattr(quantize, "compact", lambda *args: None)
    quantize_int8(exported_vit.model_path, str(tmp_path / "dynamic.onnx"), settings)
    assert os.path.getsize(tmp_path / "compact.onnx") < 0.8 * os.path.getsize(tmp_path / "dynamic.onnx")


def test_small_fp32_tensors_are_packed_into_one_int8_tensor_and_come_back_within_their_rows_precision(tmp_path):
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from kd_hf.export.quantize import PACKED_ROW, compact

    rng = np.random.default_rng(0)
    tensors = {
        "bias": rng.normal(0, 0.02, 64).astype(np.float32),
        "gamma": (1 + rng.normal(0, 0.02, 64)).astype(np.float32),  # near 1: a range holding 0 would lose its spread
        "beta": rng.normal(0, 0.02, 64).astype(np.float32),
        "token": rng.normal(0, 0.05, (1, 1, 64)).astype(np.float32),
        "head_bias": rng.normal(0, 0.02, 10).astype(np.float32),  # padded to a row
        "half": np.array(0.5, np.float32),  # a scalar stays as it is
    }
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["biased"]),
        helper.make_node("LayerNormalization", ["biased", "gamma", "beta"], ["normed"], axis=-1),
        helper.make_node("Add", ["normed", "token"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "half"], ["halved"]),
        helper.make_node("ReduceSum", ["halved"], ["summed"], keepdims=0),
        helper.make_node("Add", ["summed", "head_bias"], ["y"]),
        helper.make_node("Identity", ["gamma"], ["gamma_read"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 64])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size]) for name, size in [("y", 10), ("gamma_read", 64)]],
        [numpy_helper.from_array(values, name) for name, values in tensors.items()],
    )  # fmt: skip
    path = str(tmp_path / "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    x = {"x": rng.normal(0, 1, (1, 4, 64)).astype(np.float32)}
    before, _ = onnxruntime.InferenceSession(path).run(None, x)

    compact(path)
    model = onnx.load(path)
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    floats = [values for values in stored.values() if values.dtype == np.float32 and values.size > 1]
    int8 = [values for values in stored.values() if values.dtype == np.int8]
    assert [values.shape for values in int8] == [(5, PACKED_ROW)]  # 64 x 4 values and 10 padded to a row
    assert all(values.shape in [(5,), (5, 1)] for values in floats)  # a scale and a centre per row
    assert any(values.shape == () and values == 0.5 for values in stored.values())
    after, gamma = onnxruntime.InferenceSession(path).run(None, x)
    assert np.abs(after - before).max() < 0.01 and not np.array_equal(after, before)
    # Within half a step of its row's own range, (max - min) / 254 / 2: 1.6e-4 here, where a range from 0 to 1.05
    # would allow 2e-3.
    assert np.abs(gamma - tensors["gamma"]).max() <= np.ptp(tensors["gamma"]) / 254 / 2 * 1.001


@pytest.mark.slow
def test_onnx_occlusion_gives_the_scores_of_kd_hf_occlusion(text_student, exported_text, vit_student, exported_vit,
                                                           minilm_tokenizer):  # fmt: skip
    from kd_hf.explain import explain_images, explain_text
    from kd_hf.export import OnnxClassifier
    from kd_hf.export.occlusion import occlude_images, occlude_texts
    from kd_hf.models import load_model

    student = load_model(str(text_student))
    expected = explain_text(student, minilm_tokenizer, TEXTS, "occlusion", target=1)
    found = occlude_texts(OnnxClassifier(exported_text.model_path), minilm_tokenizer, TEXTS, [1] * len(TEXTS))
    for scores, explanation in zip(found, expected):
        np.testing.assert_allclose(scores, explanation.scores, atol=1e-4)

    vit = load_model(str(vit_student), image=True)
    pixels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    expected = explain_images(vit, pixels, "occlusion", target=[0, 1, 2])
    found = occlude_images(OnnxClassifier(exported_vit.model_path), pixels, [0, 1, 2], grid_size=2)
    for grid, explanation in zip(found, expected):
        np.testing.assert_allclose(grid, explanation.grid, atol=1e-4)


def test_a_failed_export_keeps_the_previous_onnx_folder(text_student, tmp_path, monkeypatch):
    from kd_hf.export import ExportError, export_onnx

    folder = tmp_path / "student"
    shutil.copytree(text_student, folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_text("the previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("the exporter broke half-way")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="BertForSequenceClassification.*the exporter broke half-way"):
        export_onnx(str(folder), quantize="int8")
    assert (folder / "onnx" / "model.onnx").read_text() == "the previous export"
    assert sorted(os.listdir(folder / "onnx")) == ["model.onnx"]
    assert not [name for name in os.listdir(folder) if name.startswith("_onnx")]  # no temporary folder left


def _histogram_bert():
    """A tiny BERT whose forward ends in `torch.histc`, which torch.onnx cannot convert."""
    from transformers import BertForSequenceClassification

    class HistogramBert(BertForSequenceClassification):
        def forward(self, **inputs):
            output = super().forward(**inputs)
            output.logits = output.logits + torch.histc(output.logits, bins=2).sum()
            return output

    return HistogramBert(_tiny_bert(0).config).eval()


@pytest.mark.slow
def test_an_untraceable_model_gets_one_message_naming_it_and_the_fallbacks(text_student, tmp_path, monkeypatch):
    from kd_hf.export import ExportError, export_onnx, exporter

    folder = tmp_path / "student"
    shutil.copytree(text_student, folder, ignore=shutil.ignore_patterns("onnx"))
    monkeypatch.setattr(exporter, "load_model", lambda *args, **kwargs: _histogram_bert())
    with pytest.raises(ExportError) as raised:
        export_onnx(str(folder), opset=18)
    message = str(raised.value)
    assert "HistogramBert (bert)" in message and "histc" in message
    assert "--opset" in message and "PyTorch" in message and "\n" not in message and "\x1b" not in message
    assert isinstance(raised.value, ValueError) and not (folder / "onnx").exists()


def test_evaluation_config_reads_the_split_the_student_reported_on(text_student):
    from kd_hf.export import default_teacher, evaluation_config

    config = evaluation_config(str(text_student), max_examples=8)
    assert (config.dataset_name, config.eval_split, config.max_length, config.max_eval_samples) == (
        "csv",
        "test",
        32,
        8,
    )
    assert evaluation_config(str(text_student), eval_split="validation").eval_split == "validation"
    assert default_teacher(str(text_student)) == str(text_student.parent / "teacher")


def test_a_folder_without_a_recipe_needs_a_dataset(vit_student):
    from kd_hf.export import evaluation_config

    with pytest.raises(ValueError, match="--dataset"):
        evaluation_config(str(vit_student))
    config = evaluation_config(str(vit_student), "offline:mnist", "test")
    assert (config.dataset_name, config.eval_split, config.image_column) == ("offline:mnist", "test", "image")


@pytest.fixture(scope="module")
def cli_run(text_student, tmp_path_factory):
    """`kd-hf export STUDENT --quantize int8` on a copy of the tiny student that holds an older `onnx/` folder: what
    it printed, and the folder."""
    from kd_hf.cli import main

    folder = tmp_path_factory.mktemp("cli") / "student"
    shutil.copytree(text_student, folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model_fp16.onnx").write_text("left by an older export")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # a module fixture cannot take `capsys`
        main(
            ["export", str(folder), "--quantize", "int8", "-n", "4", "--latency-repeats", "2", "--max-examples", "12"]
        )
    return printed.getvalue(), folder


@pytest.mark.slow
def test_cli_export_writes_the_graphs_and_prints_the_parity_table(cli_run):
    printed, folder = cli_run
    assert sorted(os.listdir(folder / "onnx")) == ["model.onnx", "model_quantized.onnx"]  # replaced whole
    assert "| | PyTorch fp32 | ONNX fp32 | ONNX int8 |" in printed
    assert "csv, split 'test', 12 examples" in printed
    assert "| ONNX int8 vs teacher |" in printed and "export_results.json" in printed


@pytest.mark.slow
def test_export_results_hold_the_parity_figures(cli_run):
    _, folder = cli_run

    def no_nan(value):
        raise AssertionError(f"{value} in strict JSON")

    results = json.loads((folder / "export_results.json").read_text(), parse_constant=no_nan)
    assert results["onnx"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert results["onnx"]["quantization"]["weight_type"] == "int8"
    assert results["dataset"] == {"name": "csv", "config": None, "split": "test", "num_examples": 12}
    assert results["teacher"]["name_or_path"].endswith("teacher")
    models = results["models"]
    assert list(models) == ["pytorch", "onnx_fp32", "onnx_int8"]
    assert models["onnx_fp32"]["max_abs_logit_diff"] < 1e-4
    assert models["onnx_fp32"]["top1_agreement_with_pytorch"] == 1.0
    assert models["onnx_int8"]["files"] == ["onnx/model_quantized.onnx"]
    assert models["pytorch"]["files"] == ["model.safetensors"]
    for figures in models.values():
        assert {"accuracy", "top1_agreement_with_teacher", "size_mb", "compression"} <= set(figures)
        assert set(figures["latency_ms"]) == set(figures["speedup"]) == {"batch_1", "batch_32"}
    assert models["onnx_int8"]["compression"] > 2
    assert results["latency"]["batches"]["batch_32"]["rows"] == 12  # the split is smaller than 32
    explanations = results["explanations"]
    assert explanations["num_examples"] == 4 and explanations["settings"]["method"] == "occlusion"
    agreement = explanations["agreement"]
    assert set(agreement) == {
        "onnx_fp32_vs_pytorch", "onnx_int8_vs_pytorch", "onnx_fp32_vs_teacher", "onnx_int8_vs_teacher",
        "pytorch_vs_teacher",
    }  # fmt: skip
    assert agreement["onnx_fp32_vs_pytorch"]["spearman"]["mean"] == pytest.approx(1.0)
    assert agreement["onnx_int8_vs_pytorch"]["spearman"]["n"] == 4
