"""The global report (`kd_hf.interpret`): importance, surrogate rules, representations, robustness; `kd-hf eval`."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import sentiment_rows
from PIL import Image

from kd_hf.cli import main
from kd_hf.explain import Explanation
from kd_hf.interpret import fit_surrogate, grid_importance, linear_cka, top_k_overlap, word_importance
from kd_hf.interpret.importance import class_importance, top_cells
from kd_hf.interpret.robustness import image_sensitivity, text_sensitivity
from kd_hf.interpret.surrogate import bag_of_words, split_indices


LABELS = ["negative", "positive"]


def _text(words, scores, target):
    return Explanation("integrated_gradients", target, LABELS[target], 0.9, np.asarray(scores, float), words=words)


def test_word_importance_sums_and_ranks_like_a_hand_computation():
    explanations = [
        _text(["Good", "film"], [2.0, 0.5], 1),
        _text(["good", "bad", "good", ","], [1.0, -1.0, 0.5, 9.0], 1),
        _text(["bad", "film"], [3.0, -0.5], 0),
    ]
    ranked = word_importance(explanations, LABELS)
    # positive: 2 examples; good = (2 + 1 + 0.5) / 2, film = 0.5 / 2, bad = -1 / 2 (lower-cased; "," is no word).
    assert ranked["positive"] == [
        {"word": "good", "score": 1.75, "sum": 3.5, "count": 3},
        {"word": "film", "score": 0.25, "sum": 0.5, "count": 1},
        {"word": "bad", "score": -0.5, "sum": -1.0, "count": 1},
    ]
    assert [(row["word"], row["score"]) for row in ranked["negative"]] == [("bad", 3.0), ("film", -0.5)]

    student = word_importance([_text(["film", "good"], [1.0, 0.2], 1), _text(["dull"], [1.0], 0)], LABELS)
    both = class_importance(ranked, student, LABELS, k=2)
    assert both["classes"]["positive"]["overlap"] == 1.0  # {good, film} both ways
    assert both["classes"]["negative"]["overlap"] == 0.0  # {bad, film} vs {dull}: k shrinks to the shorter list
    assert both["mean_overlap"] == 0.5
    assert [row["word"] for row in both["classes"]["positive"]["teacher_bottom"]] == ["bad", "film"]


def test_grid_importance_is_the_mean_grid_per_class():
    grids = [np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[3.0, 2.0], [0.0, -1.0]]), np.ones((2, 2))]
    explanations = [
        Explanation("saliency", t, LABELS[t], 0.9, g, grid=g) for t, g in zip([1, 1, 0], grids, strict=True)
    ]
    means = grid_importance(explanations, LABELS + ["neutral"])
    np.testing.assert_allclose(means["positive"], [[2.0, 1.0], [0.0, -0.5]])
    np.testing.assert_allclose(means["negative"], np.ones((2, 2)))
    assert means["neutral"] is None
    assert top_cells(means["positive"], 2) == [{"cell": [0, 0], "score": 2.0}, {"cell": [0, 1], "score": 1.0}]


def test_top_k_overlap_is_the_shared_fraction_of_the_top_k():
    assert top_k_overlap(["a", "b", "c", "d"], ["c", "a", "x", "y"], 2) == 0.5
    assert top_k_overlap(["a", "b", "c", "d"], ["c", "a", "x", "y"], 3) == pytest.approx(2 / 3)
    assert top_k_overlap([], ["a"], 3) is None


def test_surrogate_fidelity_is_its_measured_agreement_with_the_model():
    rng = np.random.default_rng(0)
    features = rng.integers(0, 2, size=(300, 8)).astype(float)
    predictions = (features[:, 0].astype(int) ^ features[:, 1].astype(int) ^ features[:, 2].astype(int)) | (
        features[:, 3].astype(int) & features[:, 4].astype(int)
    )  # deeper than a depth-2 tree can follow
    train, test = split_indices(len(features), seed=1)
    names = [f"f{i}" for i in range(8)]
    fitted = fit_surrogate(features, predictions, names, LABELS, train, test, max_depth=2)
    measured = np.mean(fitted["tree"].predict(features[test]) == predictions[test])
    assert fitted["fidelity"] == pytest.approx(measured) and 0.4 < fitted["fidelity"] < 1
    assert set(train) | set(test) == set(range(300)) and not set(train) & set(test)


def test_surrogate_of_a_keyword_model_finds_the_keyword_rule():
    rows = sentiment_rows(60)
    predictions = np.array([int("good" in text.split()) for text in rows["text"]])
    train, test = split_indices(60)
    features, names = bag_of_words(rows["text"], train)
    fitted = fit_surrogate(features, predictions, names, LABELS, train, test, labels=rows["label"], max_depth=1)
    assert fitted["fidelity"] == 1.0 and fitted["train_fidelity"] == 1.0 and fitted["leaves"] == 2
    majority = np.bincount(predictions[train]).argmax()
    assert fitted["majority_fidelity"] == np.mean(predictions[test] == majority) < 1
    assert '"good" <= 0.50' in fitted["rules"] and "predicts: positive" in fitted["rules"]


def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6))
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0)
    assert linear_cka(x, 0.2 * x @ rotation + 5.0) == pytest.approx(1.0)  # translation is centred away
    y = rng.standard_normal((50, 3))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x)) and 0 <= linear_cka(x, y) < 0.5
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, y[:10])


def _constant(model):
    """The model with a zeroed head: the same logits whatever the input."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.3, -0.1] + [0.0] * (model.config.num_labels - 2)))
    return model


@pytest.mark.slow
def test_explanation_sensitivity_is_zero_for_a_constant_model(make_bert, make_vit, minilm_tokenizer):
    texts = ["a good and moving film", "dull"]
    options = dict(n_steps=4, n_perturb_samples=3)
    assert text_sensitivity(_constant(make_bert()), minilm_tokenizer, texts, [0, 0], **options) == [0.0, 0.0]
    pixels = torch.randn(3, 1, 8, 8)
    assert image_sensitivity(_constant(make_vit()), pixels, [0, 0, 0], **options) == [0.0, 0.0, 0.0]
    moving = text_sensitivity(make_bert(), minilm_tokenizer, texts, [0, 1], **options)
    assert all(0 < value < 10 for value in moving)


def _save_text_model(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.slow
def test_eval_global_report_on_text(tmp_path, make_bert, minilm_tokenizer):
    _save_text_model(make_bert(layers=2, seed=1), minilm_tokenizer, tmp_path / "teacher")
    _save_text_model(make_bert(layers=1, seed=2), minilm_tokenizer, tmp_path / "student")
    rows = sentiment_rows(24, seed=3)
    with open(tmp_path / "validation.csv", "w", newline="") as file:
        csv.writer(file).writerows([("text", "label"), *((t, LABELS[y]) for t, y in zip(rows["text"], rows["label"]))])
    out = tmp_path / "report"
    main(["eval", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"), "--dataset", "csv",
          "--data_files", f"validation={tmp_path / 'validation.csv'}", "-n", "0", "--n_steps", "4",
          "--latency_repeats", "1", "--global_examples", "20", "--output_dir", str(out)])  # fmt: skip

    report = json.loads((out / "eval_results.json").read_text())["global"]
    assert report == json.loads((out / "global" / "global_report.json").read_text())
    _check_report(report, out, n=20)
    assert report["surrogate"]["features"].startswith("binary bag of words")
    assert set(report["robustness"]["student"]) == {"sensitivity_max", "drop_word"}
    drop = report["robustness"]["student"]["drop_word"]
    assert 0 <= drop["flip_rate"] <= 1 and drop["n"] + drop["skipped"] >= 20
    assert "## Global behaviour" in (out / "eval_report.md").read_text()

    from kd_hf import DistillationConfig
    from kd_hf.card import card_facts, render_card
    from kd_hf.evaluation import read_results

    args = DistillationConfig(output_dir=str(out), teacher_model_name_or_path="teacher", report_to=[])
    card = str(render_card(card_facts(args, make_bert(layers=1), read_results(str(out))), str(out)))
    examination = card.split("## Model examination")[1].split("## Limitations")[0]
    assert "### Global behaviour" in examination and "global/representation.png" in examination
    assert "surrogate rules" in examination
    without = str(render_card(card_facts(args, make_bert(layers=1), {**read_results(str(out)), "global": None})))
    assert "### Global behaviour" not in without


@pytest.mark.slow
def test_eval_global_report_on_images(tmp_path, make_vit):
    make_vit(layers=2, seed=1).save_pretrained(tmp_path / "teacher")
    make_vit(layers=1, seed=2).save_pretrained(tmp_path / "student")
    out = tmp_path / "report"
    main(["eval", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"), "--dataset", "offline:digits",
          "--image_column", "image", "--max_eval_samples", "40", "-n", "0", "--n_steps", "4",
          "--latency_repeats", "1", "--global_examples", "24", "--output_dir", str(out)])  # fmt: skip

    report = json.loads((out / "eval_results.json").read_text())["global"]
    _check_report(report, out, n=24)
    assert report["surrogate"]["features"].startswith("mean intensity of each cell of the 2x2")
    assert set(report["robustness"]["teacher"]) == {"sensitivity_max", "noise", "fgsm"}
    for name in ("noise", "fgsm"):
        assert 0 <= report["robustness"]["teacher"][name]["flip_rate"] <= 1
    assert np.asarray(report["importance"]["classes"]["0"]["student_grid"] or np.zeros((2, 2))).shape == (2, 2)


def _check_report(report, out, n):
    assert report["num_examples"] == n
    assert set(report) >= {"importance", "surrogate", "representation", "robustness", "settings"}
    for role in ("teacher", "student"):
        rules = report["surrogate"][role]
        assert 0 <= rules["fidelity"] <= 1 and rules["rules"].startswith("|---") and rules["leaves"] >= 1
        assert report["robustness"][role]["sensitivity_max"]["mean"] >= 0
    assert report["surrogate"]["train_examples"] + report["surrogate"]["test_examples"] == n
    overlap = report["importance"]["mean_overlap"]
    assert overlap is None or 0 <= overlap <= 1
    layers = report["representation"]
    assert 0 <= layers["penultimate_cka"] <= 1 + 1e-9
    assert [(p["student_layer"], p["teacher_layer"]) for p in layers["layers"]] == [(1, 2)]
    assert len(layers["cka_matrix"]) == 2 and len(layers["cka_matrix"][0]) == 3  # embeddings + layers
    assert layers["projections"] == ["PCA"]  # t-SNE from 30 examples
    for name in ("importance.png", "representation.png", "cka.png"):
        with Image.open(out / "global" / name) as image:
            assert min(image.size) > 100
