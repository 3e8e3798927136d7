"""Global interpretability of a teacher and its student: what each relies on overall (feature importance), a readable
imitation of each (surrogate rules), how alike their representations are (CKA, 2-D views), and how steady their
explanations are under small perturbations (robustness). `global_report` runs all four on a bounded sample;
`kd-hf eval --global_examples N` calls it, and `kd_hf.report.global_summary` shows it in the report and the card."""

from .importance import grid_importance, top_k_overlap, word_importance
from .report import global_report
from .representation import linear_cka
from .robustness import sensitivity
from .surrogate import fit_surrogate


__all__ = [
    "fit_surrogate",
    "global_report",
    "grid_importance",
    "linear_cka",
    "sensitivity",
    "top_k_overlap",
    "word_importance",
]
