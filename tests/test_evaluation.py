"""`kd-hf eval`: the teacher vs student report (JSON, Markdown, PNGs)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kd_hf.cli import main
from kd_hf.evaluation import median_latency_ms, size_on_disk_mb
from kd_hf.metrics.efficiency import median_latencies
from kd_hf.report import results_tables


@pytest.mark.slow
def test_eval_of_an_image_student_reports_both_models_and_writes_plots(tmp_path, make_vit):
    make_vit(layers=2, seed=1).save_pretrained(tmp_path / "teacher")
    make_vit(layers=1, seed=2).save_pretrained(tmp_path / "student")
    out = tmp_path / "report"
    main(["eval", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"), "--dataset", "offline:digits",
          "--image_column", "image", "--max_eval_samples", "40", "-n", "3", "--n_steps", "8",
          "--latency_repeats", "3", "--output_dir", str(out)])  # fmt: skip

    results = json.loads((out / "eval_results.json").read_text())
    student, teacher = results["student"], results["teacher"]
    assert results["task"] == "image-classification" and results["dataset"]["num_examples"] == 40
    for model in (student, teacher):
        assert 0 <= model["accuracy"] <= 1 and 0 <= model["macro_f1"] <= 1
        assert model["latency_ms"]["batch_1"] > 0 and model["latency_ms"]["batch_32"] > 0
    assert 0 <= student["top1_agreement"] <= 1 and student["predictive_kl"] >= 0
    assert student["compression"] == pytest.approx(teacher["parameters"] / student["parameters"])
    assert student["speedup"]["batch_1"] == pytest.approx(
        teacher["latency_ms"]["batch_1"] / student["latency_ms"]["batch_1"]
    )
    explanations = results["explanations"]
    assert explanations["num_examples"] == 3 and explanations["agreement"]["cosine"]["n"] == 3
    assert explanations["settings"]["baseline"].startswith("all-zero pixels")
    for name in ("confusion_matrix.png", "explanations/deletion_curves.png", "examples/000.png"):
        with Image.open(out / name) as image:
            assert min(image.size) >= 8  # the digits are 8x8; the plots much larger
    assert "| accuracy |" in (out / "eval_report.md").read_text()


@pytest.mark.slow
def test_eval_finds_the_teacher_in_the_students_card(tiny_text_project, tmp_path, capsys):
    main(["distill", str(tiny_text_project(explanation_examples=0))])
    out = tmp_path / "again"
    main(["eval", str(tmp_path / "student"), "--dataset", "csv", "--data_files",
          f"validation={tmp_path / 'validation.csv'}", "-n", "2", "--n_steps", "4", "--latency_repeats", "2",
          "--output_dir", str(out)])  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    assert results["teacher"]["name_or_path"] == str(tmp_path / "teacher")
    assert results["explanations"]["num_examples"] == 2
    assert "top-1 agreement with the teacher" in capsys.readouterr().out


def test_eval_without_a_teacher_reports_the_student_alone(tmp_path, make_vit):
    make_vit(layers=1, seed=2).save_pretrained(tmp_path / "student")
    main(["eval", str(tmp_path / "student"), "--dataset", "offline:digits", "--image_column", "image",
          "--max_eval_samples", "20", "--latency_repeats", "2", "--output_dir", str(tmp_path / "out")])  # fmt: skip
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["teacher"] is None and results["explanations"] is None
    assert "top1_agreement" not in results["student"]
    assert "| accuracy | – |" in results_tables(results)


def test_size_on_disk_is_the_safetensors_file_size(tmp_path, make_bert):
    model = make_bert()
    model.save_pretrained(tmp_path)
    assert size_on_disk_mb(model) == pytest.approx((tmp_path / "model.safetensors").stat().st_size / 2**20, rel=1e-3)


def test_median_latency_counts_only_timed_runs():
    calls = []
    model = lambda **inputs: calls.append(inputs)  # noqa: E731
    assert median_latency_ms(model, {"x": torch.zeros(1)}, repeats=5, warmup=2) >= 0
    assert len(calls) == 7


def test_median_latencies_take_turns_with_the_first_of_each_round_rotating():
    calls = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("student", "teacher", "other")}
    times = median_latencies(runners, repeats=3, warmup=1)
    assert calls[:3] == ["student", "teacher", "other"]  # the warm-up round
    assert calls[3:] == ["student", "teacher", "other", "teacher", "other", "student", "other", "student", "teacher"]
    assert times.keys() == runners.keys() and all(value >= 0 for value in times.values())


@pytest.mark.slow
def test_eval_explains_texts_longer_than_its_max_length(tmp_path, minilm_tokenizer):
    import csv

    from transformers import BertConfig, BertForSequenceClassification

    from kd_hf.evaluation import evaluate_student

    for name, layers in (("teacher", 2), ("student", 1)):
        torch.manual_seed(layers)
        config = BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64)
        BertForSequenceClassification(config).save_pretrained(tmp_path / name)
        minilm_tokenizer.save_pretrained(tmp_path / name)
    with open(tmp_path / "validation.csv", "w", newline="") as file:
        csv.writer(file).writerows(
            [("text", "label"), (" ".join(["a dull and tired film"] * 40), 0), ("a fine film", 1)]
        )  # the first text is 202 tokens long
    results = evaluate_student(
        str(tmp_path / "student"), str(tmp_path / "teacher"), "csv", str(tmp_path / "out"),
        data_files={"train": str(tmp_path / "validation.csv"), "validation": str(tmp_path / "validation.csv")},
        explanation_examples=2,
        explanation_method="input_x_gradient", latency_repeats=1,
    )  # fmt: skip
    examples = results["explanations"]["examples"]
    assert len(examples) == 2 and len(examples[0]["text"].split()) == 126  # max_length 128, less [CLS] and [SEP]


def _results(**student):
    return {
        "task": "text-classification", "dataset": {"name": "d", "config": None, "split": "test", "num_examples": 2},
        "labels": ["negative", "positive"], "student": {"name_or_path": "s", "accuracy": 0.5, **student},
        "teacher": None, "explanations": None, "global": None,
    }  # fmt: skip


def test_a_failed_write_leaves_the_previous_results_whole(tmp_path):
    import os

    from kd_hf.evaluation import REPORT_FILE, RESULTS_FILE, write_results

    write_results(_results(), str(tmp_path))
    before = {name: (tmp_path / name).read_text() for name in (RESULTS_FILE, REPORT_FILE)}
    with pytest.raises(TypeError):  # fails half-way through the JSON
        write_results(_results(macro_f1=0.5, unserialisable=object()), str(tmp_path))
    assert {name: (tmp_path / name).read_text() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # no temporary files left behind


def test_results_json_holds_null_where_a_figure_is_undefined(tmp_path):
    from kd_hf.evaluation import RESULTS_FILE, read_results, write_results
    from kd_hf.explain.compare import _summary
    from kd_hf.metrics.explanation import explanation_agreement

    constant = [np.ones(4)]  # every rank correlation undefined: NaN in memory
    faithful = _summary([{"comprehensiveness": 0.1, "sufficiency": 0.2, "deletion_auc": 0.3, "insertion_auc": 0.4,
                          "deletion_curve": [1.0, 0.0]}])  # fmt: skip
    results = _results(predictive_kl=float("nan"), speedup={"batch_1": float("inf")})
    results["explanations"] = {
        "settings": {"method": "saliency", "n_steps": None}, "num_examples": 1,
        "agreement": explanation_agreement(constant, constant), "faithfulness": {"teacher": faithful, "student": faithful},
    }  # fmt: skip
    write_results(results, str(tmp_path))

    def refuse(constant):
        raise AssertionError(f"{constant} in {RESULTS_FILE}")

    strict = json.loads((tmp_path / RESULTS_FILE).read_text(), parse_constant=refuse)
    assert strict["student"]["predictive_kl"] is None and strict["student"]["speedup"]["batch_1"] is None
    assert strict["explanations"]["agreement"]["spearman"]["mean"] is None
    assert "| spearman | – | – |" in results_tables(read_results(str(tmp_path)))  # read back, it still renders
