import numpy as np
import pytest
import torch

from kd_hf.explain import Explanation, explain_images, explain_text, pool_to_grid
from kd_hf.metrics.explanation import agreement, bootstrap_interval, explanation_agreement


@pytest.fixture
def bert(make_bert):
    model = make_bert(seed=3)
    model.set_attn_implementation("eager")
    return model


def test_integrated_gradients_are_complete_and_merged_into_words(bert, minilm_tokenizer):
    text = "an unwatchable , overlong film"
    [explanation] = explain_text(bert, minilm_tokenizer, [text], n_steps=128)

    assert explanation.words == ["an", "unwatchable", ",", "overlong", "film"]
    assert len(minilm_tokenizer.tokenize(text)) > len(explanation.words)  # sub-words were merged
    encoded = minilm_tokenizer([text], return_tensors="pt", return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask").bool()
    baseline = torch.where(special, encoded["input_ids"], 0)
    with torch.no_grad():
        logits = bert(**encoded).logits[0]
        baseline_logits = bert(input_ids=baseline, attention_mask=encoded["attention_mask"]).logits[0]
    assert explanation.target == int(logits.argmax())
    assert explanation.probability == pytest.approx(logits.softmax(-1).max().item(), rel=1e-5)
    # Completeness: attributions sum to the change of the target's logit from baseline to input (up to delta).
    change = (logits - baseline_logits)[explanation.target].item()
    assert explanation.scores.sum() - explanation.delta == pytest.approx(change, abs=1e-4)
    assert abs(explanation.delta) < 0.05 * max(abs(change), 1e-3) + 1e-4


def test_completeness_error_is_delta_relative_to_the_logits_change(bert, minilm_tokenizer):
    text = "a quiet , moving triumph"
    [coarse] = explain_text(bert, minilm_tokenizer, [text], n_steps=2)
    [fine] = explain_text(bert, minilm_tokenizer, [text], n_steps=64)

    encoded = minilm_tokenizer([text], return_tensors="pt", return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask").bool()
    with torch.no_grad():
        logits = bert(**encoded).logits[0]
        baseline_logits = bert(torch.where(special, encoded["input_ids"], 0), encoded["attention_mask"]).logits[0]
    change = (logits - baseline_logits)[fine.target].item()
    assert coarse.completeness_error == pytest.approx(abs(coarse.delta) / abs(change), rel=1e-3)
    assert fine.completeness_error < coarse.completeness_error  # more integration points, a closer sum
    saliency = explain_text(bert, minilm_tokenizer, [text], method="saliency")[0]
    assert saliency.completeness_error is None


def test_texts_are_batched_by_exact_length_and_explained_as_one_at_a_time(bert, minilm_tokenizer):
    from kd_hf.explain.text import length_buckets

    texts = ["a film", "an overlong , unwatchable mess", "dull", "a fine film", "bad", "a moving one", "so so"]
    order, batches = length_buckets(minilm_tokenizer, texts, batch_size=2, max_length=128)

    lengths = [len(minilm_tokenizer(text)["input_ids"]) for text in texts]
    assert sorted(order) == list(range(len(texts)))
    assert [lengths[i] for i in order] == sorted(lengths)
    assert [i for start, end in batches for i in range(start, end)] == list(range(len(texts)))
    for start, end in batches:
        assert 1 <= end - start <= 2 and len({lengths[order[i]] for i in range(start, end)}) == 1  # no padding
    assert any(end - start == 2 for start, end in batches)  # lengths repeat: texts share a batch
    batched = explain_text(bert, minilm_tokenizer, texts, batch_size=4, n_steps=8)
    alone = [explain_text(bert, minilm_tokenizer, [text], n_steps=8)[0] for text in texts]
    for together, single in zip(batched, alone):  # in the given order, with the scores of one text at a time
        assert together.words == single.words
        np.testing.assert_allclose(together.scores, single.scores, atol=1e-5)


@pytest.mark.parametrize("method", ["input_x_gradient", "saliency", "attention_rollout"])
def test_other_text_methods_give_one_score_per_word(bert, minilm_tokenizer, method):
    texts = ["a great film", "dull and interminably overlong"]
    explanations = explain_text(bert, minilm_tokenizer, texts, method=method, target=1)
    assert [len(e.words) for e in explanations] == [3, 4]
    assert all(e.target == 1 and np.isfinite(e.scores).all() for e in explanations)
    if method in ("saliency", "attention_rollout"):
        assert all((e.scores >= 0).all() for e in explanations)


def test_image_explanations_give_pixel_maps_and_patch_grids(make_vit):
    model = make_vit(seed=3)
    model.set_attn_implementation("eager")
    pixels = torch.randn(3, 1, 8, 8)
    for method in ("integrated_gradients", "saliency", "attention_rollout"):
        explanations = explain_images(model, pixels, method=method)
        assert len(explanations) == 3
        assert explanations[0].scores.shape == (8, 8) and explanations[0].grid.shape == (2, 2)  # 4x4 patches


def test_pool_to_grid_averages_each_cell():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    assert pool_to_grid(maps, 2)[0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_grad_cam_is_for_cnns(make_vit):
    from transformers import ResNetConfig, ResNetForImageClassification

    cnn = ResNetForImageClassification(
        ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    )
    [explanation] = explain_images(cnn, torch.randn(1, 1, 16, 16), method="grad_cam", grid_size=4)
    assert explanation.scores.shape == (16, 16) and (explanation.scores >= 0).all()
    with pytest.raises(ValueError, match="needs a CNN.*attention_rollout"):
        explain_images(make_vit(), torch.randn(1, 1, 8, 8), method="grad_cam")


def test_explanations_render_to_html_and_png(tmp_path):
    text = Explanation("saliency", 1, "positive", 0.9, np.array([0.5, -1.0]), words=["great", "<b>"])
    page = text.to_html()
    assert "great" in page and "&lt;b&gt;" in page and "<b>" not in page.split(":", 1)[1].replace("<b>positive", "")
    text.save_png(tmp_path / "text.png")
    image = Explanation("saliency", 3, "3", 0.8, np.random.default_rng(0).random((8, 8)))
    image.save_png(tmp_path / "image.png", image=np.zeros((8, 8)))
    for name in ("text.png", "image.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_pngs_have_a_colour_bar_on_the_shared_diverging_scale(tmp_path):
    from kd_hf.explain.explanation import DIVERGING_CMAP, NEGATIVE_RGB, POSITIVE_RGB, VMAX, VMIN

    text = Explanation("integrated_gradients", 1, "positive", 0.9, np.array([0.5, -1.0]), words=["great", "dull"])
    image = Explanation("saliency", 3, "3", 0.8, np.random.default_rng(0).normal(size=(8, 8)))
    for explanation, background in ((text, None), (image, None), (image, np.zeros((8, 8)))):
        figure = explanation.figure(image=background)
        heatmap, bar = figure.axes  # the heatmap, then its colour bar
        [scale] = [mesh for mesh in bar.collections if type(mesh).__name__ == "QuadMesh"]  # the bar's scale
        assert scale.cmap.name == DIVERGING_CMAP and (scale.norm.vmin, scale.norm.vmax) == (VMIN, VMAX)
        assert [tick.get_text() for tick in bar.get_yticklabels()] == ["−1 away", "0", "+1 towards"]
        # purple at -1, white at 0, red at +1: the colours of the demo's word highlights
        colours = np.array([scale.cmap(x)[:3] for x in (0.0, 0.5, 1.0)]) * 255
        np.testing.assert_allclose(colours, [NEGATIVE_RGB, (255, 255, 255), POSITIVE_RGB], atol=1.5)
        if background is None:  # painted with the same scale
            assert heatmap.images[-1].cmap.name == DIVERGING_CMAP and heatmap.images[-1].norm.vmin == VMIN
        figure.clear()
    text.save_png(tmp_path / "text.png")
    assert (tmp_path / "text.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rgba(239, 68, 60, 0.50)" in text.to_html() and "rgba(128, 90, 213, 1.00)" in text.to_html()


def test_agreement_metrics_match_hand_computation():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    result = agreement(a, b, top_k=0.5)
    assert result["spearman"] == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert result["kendall"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert result["top_k_overlap"] == 0.5  # top-2: {3, 2} vs {3, 1}
    assert result["cosine"] == pytest.approx(29 / 30)
    assert agreement(a, a)["spearman"] == pytest.approx(1.0)
    assert np.isnan(agreement(np.ones(3), a[:3])["spearman"])
    with pytest.raises(ValueError, match="align them first"):
        agreement(a, b[:3])


def test_bootstrap_interval_and_random_baseline():
    mean, low, high = bootstrap_interval([0.2, 0.4, 0.6, 0.8, float("nan")])
    assert mean == pytest.approx(0.5) and low <= mean <= high and low >= 0.2 and high <= 0.8
    rng = np.random.default_rng(1)
    teacher = [rng.standard_normal(12) for _ in range(200)]
    report = explanation_agreement(teacher, [t + 0.1 * rng.standard_normal(12) for t in teacher])
    assert report["spearman"]["mean"] > 0.9 and report["spearman"]["low"] > 0.9
    assert abs(report["spearman"]["random"]) < 0.05 and report["spearman"]["n"] == 200


class PresenceModel(torch.nn.Module):
    """p(class 1) = sigmoid(sum of the weights of the words still attended to): faithfulness by hand."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.tensor([0.0, *weights])  # position 0 is [CLS], which always stays

    def forward(self, input_ids, attention_mask):
        logit = (attention_mask.float() * self.weights).sum(-1)
        return type("Output", (), {"logits": torch.stack([torch.zeros_like(logit), logit], -1)})()


def test_aopc_and_deletion_auc_match_hand_computation():
    from kd_hf.metrics.faithfulness import faithfulness

    weights = [2.0, -1.0, 0.5, 1.0]
    model = PresenceModel(weights)
    inputs = {"input_ids": torch.tensor([[101, 5, 6, 7, 8]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    features = torch.tensor([-1, 0, 1, 2, 3])
    result = faithfulness(model, inputs, features, scores=weights, target=1, steps=4)

    def p(kept):
        return 1 / (1 + np.exp(-sum(weights[i] for i in kept)))

    close = {"rel": 1e-5}  # the model computes in float32
    full = p([0, 1, 2, 3])
    # 4 features: the bins 1, 5, 10, 20, 50% remove the top 1, 1, 1, 1, 2 features (ranked 0, 3, 2, 1).
    comprehensiveness = (4 * (full - p([1, 2, 3])) + (full - p([1, 2]))) / 6
    sufficiency = (4 * (full - p([0])) + (full - p([0, 3]))) / 6
    assert result["comprehensiveness"] == pytest.approx(comprehensiveness, **close)
    assert result["sufficiency"] == pytest.approx(sufficiency, **close)
    deletion = [full, p([1, 2, 3]), p([1, 2]), p([1]), p([])]
    assert result["deletion_curve"] == pytest.approx(deletion, **close)
    assert result["deletion_auc"] == pytest.approx(np.trapezoid(deletion, [0, 0.25, 0.5, 0.75, 1.0]), **close)
    insertion = result["insertion_curve"]
    assert insertion[0] == pytest.approx(p([]), **close) and insertion[-1] == pytest.approx(full, **close)


def test_faithful_explanations_beat_reversed_ones_on_images(make_vit):
    from kd_hf.metrics.faithfulness import faithfulness

    model = make_vit(seed=3)
    pixels = torch.randn(1, 1, 8, 8)
    [explanation] = explain_images(model, pixels, method="integrated_gradients", n_steps=64)
    cells = torch.arange(4).reshape(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 2x2 grid of 4x4 cells
    args = (model, {"pixel_values": pixels}, cells)
    ranked = faithfulness(*args, explanation.grid.ravel(), explanation.target, steps=4)
    reversed_ = faithfulness(*args, -explanation.grid.ravel(), explanation.target, steps=4)
    assert ranked["deletion_auc"] <= reversed_["deletion_auc"]
    assert ranked["insertion_auc"] >= reversed_["insertion_auc"]


@pytest.mark.slow
def test_explain_command_writes_a_text_report(tmp_path, make_bert, minilm_tokenizer):
    import json

    from kd_hf.cli import main

    for name, seed, layers in (("teacher", 1, 2), ("student", 2, 1)):
        make_bert(layers=layers, seed=seed).save_pretrained(tmp_path / name)
        minilm_tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "report"
    main(["explain", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
          "--dataset", "offline:rotten_tomatoes", "-n", "4", "--n_steps", "8", "--output_dir", str(out)])  # fmt: skip

    report = json.loads((out / "explanation_report.json").read_text())
    assert report["agreement"]["spearman"]["n"] == 4 and report["skipped"] == 0
    assert -1 <= report["agreement"]["spearman"]["mean"] <= 1
    assert set(report["faithfulness"]) == {"teacher", "student"}
    page = (out / "explanation_report.html").read_text()
    assert page.count("<span title=") > 8 and "random" in page
    assert (out / "explanations" / "deletion_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_explain_command_writes_image_overlays(tmp_path, make_vit):
    import json

    from kd_hf.cli import main

    make_vit(layers=2, seed=1).save_pretrained(tmp_path / "teacher")
    make_vit(layers=1, seed=2).save_pretrained(tmp_path / "student")
    out = tmp_path / "report"
    main(["explain", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"), "--dataset",
          "offline:digits", "--image_column", "image", "-n", "3", "--n_steps", "8", "--output_dir", str(out)])  # fmt: skip

    report = json.loads((out / "explanation_report.json").read_text())
    assert report["agreement"]["cosine"]["n"] == 3
    assert len(list((out / "explanations").glob("*_student.png"))) == 3


def _long_bert(layers: int, seed: int):
    """A tiny BERT that takes MiniLM's 512 tokens (the shared fixture's takes 64)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("max_length", [128, 40])
def test_texts_longer_than_the_explained_length_are_explained_and_measured_on_the_same_words(
    minilm_tokenizer, max_length
):
    from kd_hf.explain.compare import compare_explanations

    long = " ".join(["a good and great film"] * 40)  # 200 words, 202 tokens with [CLS] and [SEP]
    comparison = compare_explanations(
        _long_bert(2, seed=1), _long_bert(1, seed=2), [long, "a fine film"], minilm_tokenizer,
        method="input_x_gradient", max_length=max_length,
    )  # fmt: skip
    assert [len(e.words) for e in comparison["explanations"]["student"]] == [max_length - 2, 3]
    assert comparison["agreement"]["spearman"]["n"] == 2 and comparison["skipped"] == 0
    assert len(comparison["faithfulness"]["student"]["deletion_curve"]) == 11


def test_random_baseline_is_the_chance_level_of_each_metric():
    rng = np.random.default_rng(0)
    sizes = [5, 7, 10, 12, 23, 30]  # top-20%: k = 1, 1, 2, 2, 5, 6 features
    teacher, student = [rng.standard_normal(n) for n in sizes], [rng.standard_normal(n) for n in sizes]
    report = explanation_agreement(teacher, student)
    chance = np.mean([max(1, round(0.2 * n)) / n for n in sizes])  # E|top_k(a) & top_k(shuffled b)| / k = k / n
    assert report["top_k_overlap"]["random"] == pytest.approx(chance, abs=1e-3)
    assert report["spearman"]["random"] == pytest.approx(0, abs=1e-3)
    assert report["kendall"]["random"] == pytest.approx(0, abs=1e-3)
    # Non-negative maps (saliency's) share their sign: shuffled ones are far from orthogonal.
    teacher, student = [np.abs(t) for t in teacher], [np.abs(s) for s in student]
    shuffled = [
        np.mean([t @ rng.permutation(s) for _ in range(4000)]) / (np.linalg.norm(t) * np.linalg.norm(s))
        for t, s in zip(teacher, student)
    ]
    random = explanation_agreement(teacher, student)["cosine"]["random"]
    assert random > 0.5 and random == pytest.approx(np.mean(shuffled), abs=0.01)


def _comparison(curve):
    """What `compare_explanations` returns, by hand: one text whose two explanations are constant (every rank
    correlation undefined)."""
    from kd_hf.explain.compare import _summary

    pair = [Explanation("saliency", 1, "positive", 0.9, np.ones(3), words=["a", "fine", "film"]) for _ in range(2)]
    row = {"comprehensiveness": 0.1, "sufficiency": 0.2, "deletion_auc": 0.3, "insertion_auc": 0.4}
    faithful = {**_summary([{**row, "deletion_curve": [1.0, 0.5, 0.0]}]), "deletion_curve": curve}
    return {
        "method": "saliency", "n_steps": 8, "agreement": explanation_agreement([np.ones(3)], [np.ones(3)]),
        "faithfulness": {"teacher": faithful, "student": faithful}, "skipped": 0,
        "explanations": {"teacher": pair[:1], "student": pair[1:]},
    }  # fmt: skip


def test_explanation_report_json_is_strict_and_a_failed_write_keeps_the_old_report(tmp_path):
    import json
    import os

    from kd_hf.explain.report import write_report

    write_report(_comparison([1.0, 0.5, 0.0]), str(tmp_path), ["a fine film"])
    names = ("explanation_report.html", "explanation_report.json")
    before = {name: (tmp_path / name).read_text() for name in names}
    report = json.loads(before[names[1]], parse_constant=lambda constant: pytest.fail(f"{constant} in the JSON"))
    agreement = report["agreement"]
    assert agreement["spearman"]["mean"] is None and agreement["cosine"]["mean"] == pytest.approx(1)
    assert "<td>spearman</td><td>–</td>" in before[names[0]]

    with pytest.raises(TypeError):  # the deletion curve of no examples: NaN, not a list (as `explain -n 0` made)
        write_report(_comparison(float("nan")), str(tmp_path), ["a fine film"])
    assert {name: (tmp_path / name).read_text() for name in names} == before
    assert not [name for name in os.listdir(tmp_path) if name not in (*names, "explanations")]


def test_comparing_no_examples_is_refused(make_bert, minilm_tokenizer):
    from kd_hf.explain.compare import compare_explanations

    with pytest.raises(ValueError, match="No examples to explain"):
        compare_explanations(make_bert(seed=1), make_bert(seed=2), [], minilm_tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["text", "image"])
def test_the_teachers_explanations_come_back_from_the_disk_cache_equal(
    make_bert, make_vit, minilm_tokenizer, monkeypatch, modality
):
    from kd_hf.explain import compare

    if modality == "text":
        teacher, student = make_bert(seed=11), make_bert(seed=12)
        examples, tokenizer = ["a warm and wise film", "flat, tired cast"], minilm_tokenizer
    else:
        teacher, student = make_vit(seed=11), make_vit(seed=12)
        examples, tokenizer = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), None
    explained = []
    original = compare.explain_model
    monkeypatch.setattr(
        compare, "explain_model", lambda model, *a, **k: explained.append(model) or original(model, *a, **k)
    )
    options = dict(method="integrated_gradients", n_steps=4)

    first = compare.compare_explanations(teacher, student, examples, tokenizer, **options)
    second = compare.compare_explanations(teacher, student, examples, tokenizer, **options)
    assert [model is teacher for model in explained] == [True, False, False]  # the teacher explained once
    for old, new in zip(first["explanations"]["teacher"], second["explanations"]["teacher"]):
        assert new.scores.dtype == old.scores.dtype and np.array_equal(new.scores, old.scores)
        assert (new.words, new.target, new.probability, new.delta) == (
            old.words,
            old.target,
            old.probability,
            old.delta,
        )
        assert (new.grid is None and old.grid is None) or np.array_equal(new.grid, old.grid)
    assert second["faithfulness"]["teacher"] == first["faithfulness"]["teacher"]
    assert second["agreement"] == first["agreement"]

    # Other settings, other weights, or no cache: explained again.
    compare.compare_explanations(teacher, student, examples, tokenizer, method="integrated_gradients", n_steps=2)
    with torch.no_grad():
        next(teacher.parameters()).add_(0.01)
    compare.compare_explanations(teacher, student, examples, tokenizer, **options)
    compare.compare_explanations(teacher, student, examples, tokenizer, cache_teacher=False, **options)
    assert sum(model is teacher for model in explained) == 4


@pytest.mark.parametrize("given_logits", [True, False])
def test_the_convergence_delta_is_captums_without_running_the_inputs_again(make_vit, given_logits):
    from dataclasses import replace

    from captum.attr import IntegratedGradients

    from kd_hf.explain.inputs import image_inputs
    from kd_hf.explain.methods import integrated_gradients

    vit, pixels, target = make_vit(seed=1), torch.randn(3, 1, 8, 8), torch.tensor([0, 3, 5])
    with torch.no_grad():
        logits = vit(pixel_values=pixels).logits if given_logits else None
    shared = image_inputs(vit, pixels, 2, n_steps=8, logits=logits)  # zero pixels: one baseline for all, one row
    for inputs in (shared, replace(shared, baseline=torch.randn_like(pixels))):  # a baseline per image
        _, delta = integrated_gradients(inputs, target)
        _, expected = IntegratedGradients(inputs.forward).attribute(
            inputs.values, inputs.baseline, target=target, n_steps=8, return_convergence_delta=True
        )
        torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)
