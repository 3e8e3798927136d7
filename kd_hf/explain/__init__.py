"""Explanations of HF classifiers: one registry of explainers (captum methods and occlusion) for text and images, and
differentiable gradient attributions for training students to explain like their teachers."""

from .explanation import Explanation
from .gradients import ATTRIBUTION_METHODS, gradient_attribution
from .inputs import IMAGE_BASELINE, TEXT_BASELINE, AttributionInputs
from .registry import EXPLAINERS, Explainer, explainer_names, get_explainer, register_explainer
from .text import TEXT_METHODS, explain_text, merge_words
from .vision import IMAGE_METHODS, explain_images, pool_to_grid


__all__ = [
    "ATTRIBUTION_METHODS",
    "EXPLAINERS",
    "IMAGE_BASELINE",
    "IMAGE_METHODS",
    "TEXT_BASELINE",
    "TEXT_METHODS",
    "AttributionInputs",
    "Explainer",
    "Explanation",
    "explain_images",
    "explain_text",
    "explainer_names",
    "get_explainer",
    "gradient_attribution",
    "merge_words",
    "pool_to_grid",
    "register_explainer",
]
