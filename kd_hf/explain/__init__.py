"""Explanations of HF classifiers: captum explainers for text and images, and differentiable gradient attributions
for training students to explain like their teachers."""

from .explanation import Explanation
from .gradients import ATTRIBUTION_METHODS, gradient_attribution
from .text import TEXT_METHODS, explain_text, merge_words
from .vision import IMAGE_METHODS, explain_images, pool_to_grid


__all__ = [
    "ATTRIBUTION_METHODS",
    "IMAGE_METHODS",
    "TEXT_METHODS",
    "Explanation",
    "explain_images",
    "explain_text",
    "gradient_attribution",
    "merge_words",
    "pool_to_grid",
]
