"""`benchmarks/ig_quadrature.py`: its rules integrate the same path as kd_hf's integrated gradients, and its
completeness rules are complete."""

import argparse
import pathlib

import numpy as np
import pytest
import torch

from kd_hf.explain.gradients import integrated_gradients


@pytest.fixture
def quadrature(monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "benchmarks"))
    import ig_quadrature

    return ig_quadrature


@pytest.fixture
def text_path(quadrature, make_bert, minilm_tokenizer):
    model = make_bert(seed=3).requires_grad_(False)
    return model, quadrature.text_path(model, minilm_tokenizer, "a gripping, funny and humane film", 32)


@pytest.fixture
def image_path(quadrature, make_vit):
    model = make_vit(seed=3).requires_grad_(False)
    image = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model, image, quadrature.image_path(model, image)


def change(path) -> float:
    start, end = path.values([0.0, 1.0])
    return end - start


def test_gauss_legendre_rule_is_kd_hf_integrated_gradients_on_text(quadrature, text_path, minilm_tokenizer):
    model, path = text_path
    encoded = minilm_tokenizer("a gripping, funny and humane film", return_tensors="pt")
    ours, _ = integrated_gradients(model, dict(encoded), torch.tensor([path.target]), n_steps=8,
                                   special_ids=minilm_tokenizer.all_special_ids)  # fmt: skip
    scores, cost = quadrature.rule_gauss_legendre(path, 8, False, change(path))
    np.testing.assert_allclose(scores, ours[0].detach().numpy(), atol=1e-5)
    assert cost == (8, 2)


def test_gauss_legendre_rule_is_kd_hf_integrated_gradients_on_images(quadrature, image_path):
    model, image, path = image_path
    ours, _ = integrated_gradients(model, {"pixel_values": image[None]}, torch.tensor([path.target]), n_steps=8)
    scores, _ = quadrature.rule_gauss_legendre(path, 8, False, change(path))
    np.testing.assert_allclose(scores, ours[0].flatten().detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("rule", ["trapezoid", "panels", "gauss_legendre"])
def test_completeness_rules_add_up_to_the_change_they_explain(quadrature, text_path, rule):
    _, path = text_path
    total = change(path)
    if rule == "trapezoid":
        scores, cost = quadrature.rule_trapezoid(path, 5, True)
        assert cost == (6, 0)
    elif rule == "panels":
        scores, cost = quadrature.rule_panels(path, 2, 3)
        assert cost == (6, 3)
    else:
        scores, _ = quadrature.rule_gauss_legendre(path, 4, True, total)
    assert scores.sum() == pytest.approx(total, rel=1e-5)


def test_every_rule_converges_to_the_reference_integral(quadrature, image_path):
    _, _, path = image_path
    total = change(path)
    reference, _ = quadrature.rule_gauss_legendre(path, quadrature.REFERENCE_POINTS, False, total)
    for few, many in ((2, 32), (3, 47)):
        coarse = quadrature.rule_trapezoid(path, few, False)[0]
        fine = quadrature.rule_trapezoid(path, many, True)[0]
        assert np.abs(fine - reference).sum() < np.abs(coarse - reference).sum() / 10
    assert quadrature.rule_gauss_legendre(path, 64, False, total)[0] == pytest.approx(reference, abs=1e-5)


def test_share_adds_each_whole_shortfall_by_the_terms_magnitudes(quadrature):
    terms = np.array([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    shared = quadrature.share(terms, np.array([2.0, 1.0]))
    np.testing.assert_allclose(shared[0], [1.5, -1.5, 0.0])  # a zero term gets nothing
    np.testing.assert_allclose(shared[1], [1 / 3, 1 / 3, 1 / 3])  # all-zero terms: shared equally
    np.testing.assert_allclose(shared.sum(1), terms.sum(1) + [2.0, 1.0])


def test_rules_table_names_each_rule_with_its_evaluations(quadrature):
    cli = argparse.Namespace(gauss_legendre=[8], complete_gauss_legendre=[16], trapezoid=[15], panels=["4x4"])
    assert list(quadrature.rules(cli)) == [
        "gauss_legendre 8",
        "gauss_legendre 16 + completeness",
        "riemann_trapezoid 16",
        "trapezoid 16 + completeness per interval",
        "panels 4 x 4 + completeness per panel",
    ]
