"""The registry of explainers (`kd_hf.explain.registry`): every place that names a method reads it, an unknown method
is an error everywhere, and occlusion, added as one entry, works through all of them."""

import dataclasses

import numpy as np
import pytest
import torch

from kd_hf import DistillationConfig
from kd_hf.explain import (
    ATTRIBUTION_METHODS,
    EXPLAINERS,
    IMAGE_METHODS,
    TEXT_METHODS,
    Explainer,
    explain_images,
    explain_text,
    register_explainer,
)
from kd_hf.explain.gradients import EXPLAINED_AS
from kd_hf.explain.inputs import grid_cells
from kd_hf.interpret.robustness import drop_word, image_perturbations, image_sensitivity, text_sensitivity


ALL_METHODS = ["integrated_gradients", "input_x_gradient", "saliency", "attention_rollout", "grad_cam", "occlusion"]
KNOWN = r"known methods: integrated_gradients, input_x_gradient, saliency, attention_rollout, grad_cam, occlusion"


def test_the_registry_lists_every_method_and_the_places_that_name_methods_read_it():
    assert list(EXPLAINERS) == ALL_METHODS
    assert all(isinstance(e, Explainer) and e.label for e in EXPLAINERS.values())
    assert "grad_cam" not in TEXT_METHODS and set(IMAGE_METHODS) == set(ALL_METHODS)
    field = {f.name: f for f in dataclasses.fields(DistillationConfig)}
    assert field["explanation_method"].metadata["choices"] == ALL_METHODS
    # the attribution loss trains through the differentiable ones, named as `gradient_attribution` names them
    assert field["attribution_method"].metadata["choices"] == list(ATTRIBUTION_METHODS)
    assert EXPLAINED_AS == {"integrated_gradients": "integrated_gradients", "input_x_gradient": "input_x_gradient",
                            "gradient": "saliency"}  # fmt: skip


def test_registering_refuses_taken_or_badly_formed_names_and_entries_without_a_function():
    def text(inputs, target):
        return inputs.values.sum(-1), None

    with pytest.raises(ValueError, match="already registered"):
        register_explainer(Explainer("occlusion", "occlusion", text=text))
    with pytest.raises(ValueError, match="snake_case"):
        register_explainer(Explainer("Kernel SHAP", "kernel SHAP", text=text))
    with pytest.raises(ValueError, match="needs a `text` or an `image` function"):
        register_explainer(Explainer("nothing", "nothing"))
    assert list(EXPLAINERS) == ALL_METHODS


def test_an_unknown_method_is_an_error_naming_the_known_ones_everywhere(
    tmp_path, make_bert, make_vit, minilm_tokenizer
):
    from kd_hf.demo import _BadInput, _settings
    from kd_hf.evaluation import explanation_settings

    with pytest.raises(
        ValueError, match=r"`explanation_method` must be one of \['integrated_gradients', .*'occlusion'\]"
    ):
        DistillationConfig(output_dir=str(tmp_path), model_name_or_path="m", explanation_method="lime")
    with pytest.raises(_BadInput, match="Unknown method 'lime'; choose one of integrated_gradients, .*occlusion"):
        _settings("lime", 8)
    with pytest.raises(ValueError, match=KNOWN):
        text_sensitivity(make_bert(), minilm_tokenizer, ["a good film"], [0], method="lime")
    with pytest.raises(ValueError, match=KNOWN):
        image_sensitivity(make_vit(), torch.randn(1, 1, 8, 8), [0], method="lime")
    with pytest.raises(ValueError, match=KNOWN):
        explain_text(make_bert(), minilm_tokenizer, ["a good film"], method="lime")
    with pytest.raises(ValueError, match=KNOWN):
        explanation_settings(False, "lime", 8)
    with pytest.raises(
        ValueError, match="`grad_cam` does not explain texts; for texts use one of integrated_gradients"
    ):
        explain_text(make_bert(), minilm_tokenizer, ["a good film"], method="grad_cam")


def test_text_occlusion_scores_each_word_by_the_drop_of_the_target_logit_when_it_is_padded(
    make_bert, minilm_tokenizer
):
    model = make_bert(seed=3)
    texts = ["an unwatchable , overlong film", "a quiet triumph"]  # "unwatchable" is several tokens, padded together
    explanations = explain_text(model, minilm_tokenizer, texts, method="occlusion", target=[0, 1])
    for text, explanation in zip(texts, explanations):
        encoded = minilm_tokenizer(text, return_tensors="pt")
        word_ids = encoded.word_ids(0)
        with torch.no_grad():
            logit = model(**encoded).logits[0, explanation.target]
            drops = []
            for word in range(len(text.split())):
                padded = encoded["input_ids"].clone()
                padded[0, [position for position, w in enumerate(word_ids) if w == word]] = 0  # [PAD]
                occluded = model(input_ids=padded, attention_mask=encoded["attention_mask"]).logits[0]
                drops.append(float(logit - occluded[explanation.target]))
        assert explanation.words == text.split()
        np.testing.assert_allclose(explanation.scores, drops, atol=1e-5)
        assert explanation.delta is None and "n_steps" not in explanation.settings
    assert len(minilm_tokenizer.tokenize("unwatchable")) > 1


def test_image_occlusion_scores_each_patch_grid_cell_by_the_drop_when_it_is_zeroed(make_vit):
    model = make_vit(seed=3)
    pixels = torch.randn(2, 1, 8, 8)
    explanations = explain_images(model, pixels, method="occlusion", grid_size=2)
    cells = grid_cells(8, 8, 2)
    for image, explanation in zip(pixels, explanations):
        with torch.no_grad():
            logit = model(pixel_values=image[None]).logits[0, explanation.target]
            drops = []
            for cell in range(4):
                occluded = image.clone()
                occluded[:, cells == cell] = 0
                drops.append(float(logit - model(pixel_values=occluded[None]).logits[0, explanation.target]))
        assert explanation.scores.shape == (8, 8)
        np.testing.assert_allclose(explanation.grid.ravel(), drops, atol=1e-5)


@pytest.mark.slow
def test_the_demo_offers_occlusion_after_integrated_gradients(make_bert, minilm_tokenizer):
    from kd_hf.demo import METHODS, _Explainer, _Model, _settings, show_steps

    assert list(METHODS.values())[0] == "integrated_gradients" and METHODS["occlusion"] == "occlusion"
    assert "grad_cam" not in METHODS.values() and "attention_rollout" not in METHODS.values()  # not for every model
    assert _settings("occlusion", 8) == ("occlusion", 8) and show_steps("occlusion").visible is False
    student = _Model("student", make_bert(seed=1), minilm_tokenizer, False)
    message, _, prediction, _, words, figures, deletion = _Explainer(student, None).explain_text(
        "a quiet triumph", "occlusion", 8
    )
    assert "(occlusion)" in message and [word for word, _ in words[::2]] == ["a", "quiet", "triumph"]
    assert len(deletion) == 11


@pytest.mark.slow
def test_robustness_measures_occlusion(make_bert, make_vit, minilm_tokenizer):
    texts = ["a good and moving film", "dull"]
    options = dict(method="occlusion", n_perturb_samples=3)
    moving = text_sensitivity(make_bert(seed=1), minilm_tokenizer, texts, [0, 1], **options)
    assert len(moving) == 2 and all(0 < value < 10 for value in moving)
    images = image_sensitivity(make_vit(seed=1), torch.randn(3, 1, 8, 8), [0, 1, 2], **options)
    assert len(images) == 3 and all(np.isfinite(images))

    model = make_bert(seed=1)
    before = explain_text(model, minilm_tokenizer, texts, method="occlusion")
    dropped = drop_word(model, minilm_tokenizer, texts, before, method="occlusion")
    assert dropped["n"] == 1 and dropped["skipped"] == 1  # "dull" has one word
    vit = make_vit(seed=1)
    pixels = torch.randn(3, 1, 8, 8)
    perturbed = image_perturbations(vit, pixels, explain_images(vit, pixels, method="occlusion"), method="occlusion")
    assert perturbed["noise"]["n"] == perturbed["fgsm"]["n"] == 3
