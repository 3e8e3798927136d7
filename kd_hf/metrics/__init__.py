"""Metrics of a distilled student: task quality and fidelity to its teacher. The explanation metrics are also
`evaluate` modules: `evaluate.load(module_path("explanation_agreement"))` (or `"faithfulness"`) works offline."""

from .fidelity import predictive_kl, top1_agreement
from .modules import MODULES, module_path
from .task import classification_metrics


__all__ = ["MODULES", "classification_metrics", "module_path", "predictive_kl", "top1_agreement"]
