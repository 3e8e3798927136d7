"""`kd-hf eval`: the teacher vs student report (JSON, Markdown, PNGs)."""

import json

import pytest
import torch
from PIL import Image

from kd_hf.cli import main
from kd_hf.evaluation import median_latency_ms, results_tables, size_on_disk_mb


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
