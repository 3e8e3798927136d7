"""Metrics of a distilled student: task quality and fidelity to its teacher."""

from .fidelity import predictive_kl, top1_agreement
from .task import classification_metrics


__all__ = ["classification_metrics", "predictive_kl", "top1_agreement"]
