"""Do a student's explanations agree with its teacher's?

The figures (Spearman, Kendall, top-k overlap and cosine of the signed scores, each with a bootstrap 95% interval and
its exact chance level) are defined in the `explanation_agreement` evaluate module
(`kd_hf/metrics/modules/explanation_agreement/`), which this re-exports: `explanation_agreement` computes through
`evaluate`, so `kd-hf eval`, `evaluate.load(module_path("explanation_agreement"))` and a metric Space give the same
numbers from one implementation.
"""

import numpy as np

from .modules import compute
from .modules.explanation_agreement.explanation_agreement import (
    AGREEMENT_METRICS,
    agreement,
    bootstrap_interval,
    chance_agreement,
)


__all__ = ["AGREEMENT_METRICS", "agreement", "bootstrap_interval", "chance_agreement", "explanation_agreement"]


def explanation_agreement(
    teacher: list[np.ndarray], student: list[np.ndarray], top_k: float = 0.2, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Agreement of paired attributions over a set of examples, with the random-attribution baseline.

    Args:
        teacher (`list[np.ndarray]`): the teacher's attributions, one array per example (a word vector, or a patch
            grid: compared cell by cell).
        student (`list[np.ndarray]`): the student's attributions of the same examples, each the size of the teacher's.
        top_k (`float`, *optional*, defaults to 0.2): the fraction of features whose top-k sets are compared.
        seed (`int`, *optional*, defaults to 0): seed of the bootstrap.

    Returns:
        `dict`: for each metric, `{"mean", "low", "high", "random", "n"}` (bootstrap 95% interval; `random` is the
        chance level, `chance_agreement` averaged over the examples where the metric is defined).
    """
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher attributions but {len(student)} student ones.")
    teacher = [np.asarray(t, dtype=float).ravel() for t in teacher]
    student = [np.asarray(s, dtype=float).ravel() for s in student]
    for t, s in zip(teacher, student):
        if t.shape != s.shape:  # before `evaluate` holds the batch
            raise ValueError(f"Attributions cover different features ({t.size} vs {s.size}); align them first.")
    return compute("explanation_agreement", predictions=student, references=teacher, top_k=top_k, seed=seed)
