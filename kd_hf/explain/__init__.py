"""Explanations of HF classifiers: differentiable gradient attributions (for training) and captum explainers."""

from .gradients import ATTRIBUTION_METHODS, gradient_attribution


__all__ = ["ATTRIBUTION_METHODS", "gradient_attribution"]
