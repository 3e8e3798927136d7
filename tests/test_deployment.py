"""A student exported at the end of `kd-hf distill` (`export_onnx`): its card's *Deployment* section, whose
onnxruntime snippet runs from the folder and, once pushed, from the Hub repo that carries `onnx/`."""

import json
import os
import re
import subprocess
import sys

import pytest

from kd_hf.cli import main
from kd_hf.hub import push_student


REPO = "me/onnx-student"


def _run_snippet(card: str, env: dict) -> dict:
    snippet = re.search(r"## Deployment.*?```python\n(.*?)```", card, re.S).group(1)
    assert "kd_hf" not in snippet and "torch" not in snippet
    printed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True, env=env)
    return eval(printed.stdout)  # noqa: S307  (a dict of label -> probability printed by the snippet)


@pytest.fixture
def exported_student(tiny_text_project, tmp_path):
    recipe = tiny_text_project(explanation_examples=2, card_examples=1, export_onnx="int8", save_strategy="no")
    main(["distill", str(recipe)])
    return tmp_path / "student"


@pytest.mark.slow
def test_distill_exports_the_student_and_the_cards_snippet_runs_the_int8_graph(exported_student):
    folder = exported_student
    assert sorted(os.listdir(folder / "onnx")) == ["model.onnx", "model_quantized.onnx"]
    results = json.loads((folder / "export_results.json").read_text())
    assert results["dataset"]["split"] == "validation" and results["teacher"]["name_or_path"].endswith("teacher")
    facts = json.loads((folder / "explanation_card.json").read_text())
    assert facts["deployment"] == results  # kept with the card's facts, so that a push renders it again
    card = (folder / "README.md").read_text()
    assert card.index("## Results") < card.index("## Deployment") < card.index("## Model examination")
    assert "| | PyTorch fp32 | ONNX fp32 | ONNX int8 |" in card and "| ONNX int8 vs teacher |" in card
    assert f'os.path.join("{folder}", "onnx/model_quantized.onnx")' in card

    probabilities = _run_snippet(card, {"HF_HUB_OFFLINE": "1"})
    assert set(probabilities) == {"negative", "positive"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=2e-3)


@pytest.mark.slow
def test_a_push_carries_the_graphs_and_the_published_snippet_reads_them_from_the_hub(exported_student, hub_server):
    push_student(str(exported_student), REPO)
    files = hub_server.files(REPO)
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx", "export_results.json"} <= set(files)
    assert files["onnx/model_quantized.onnx"] == (exported_student / "onnx" / "model_quantized.onnx").read_bytes()
    card = files["README.md"].decode()
    assert f'hf_hub_download("{REPO}", "onnx/model_quantized.onnx")' in card and str(exported_student) not in card

    # The published snippet, run elsewhere, downloads the int8 graph and the tokenizer from the (loopback) Hub.
    env = {name: os.environ[name] for name in ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HUB_DISABLE_XET", "PATH")}
    probabilities = _run_snippet(card, env)
    assert set(probabilities) == {"negative", "positive"}


@pytest.mark.slow
def test_the_snippet_of_an_image_student_feeds_its_image_processor_to_the_graph(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from kd_hf.card.text import onnx_usage
    from kd_hf.export import export_onnx

    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3, id2label={0: "zero", 1: "one", 2: "two"},
        label2id={"zero": 0, "one": 1, "two": 2},
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5]).save_pretrained(tmp_path)
    export_onnx(str(tmp_path), quantize="int8")
    facts = {"task": "image-classification", "deployment": {"models": {"onnx_fp32": {}, "onnx_int8": {}}}}
    card = "## Deployment\n```python\n" + onnx_usage(facts, None, str(tmp_path)) + "```"
    probabilities = _run_snippet(card, {"HF_HUB_OFFLINE": "1"})
    assert set(probabilities) == {"zero", "one", "two"}
