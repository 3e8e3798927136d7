"""Do a student's explanations agree with its teacher's?

Per example, between two attribution vectors over the same words (text) or patch-grid cells (images): Spearman's
rho and Kendall's tau-b of the *signed* scores (scipy), the overlap of the top-k features by signed score
(`|top_k(a_T) & top_k(a_S)| / k`, k a fraction of the features), and cosine similarity. Each figure is averaged over
examples with a bootstrap 95% interval, next to the same figure for random attributions (standard normal scores),
which is what "no agreement" looks like on the same examples.
"""

import numpy as np
from scipy.stats import kendalltau, spearmanr


AGREEMENT_METRICS = ("spearman", "kendall", "top_k_overlap", "cosine")


def agreement(a: np.ndarray, b: np.ndarray, top_k: float = 0.2) -> dict[str, float]:
    """Agreement of two attribution vectors of one example (NaN where a rank correlation is undefined)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Attributions cover different features ({a.size} vs {b.size}); align them first.")
    k = max(1, int(round(top_k * a.size)))
    constant = np.ptp(a) == 0 or np.ptp(b) == 0
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return {
        "spearman": float("nan") if constant or a.size < 2 else float(spearmanr(a, b).statistic),
        "kendall": float("nan") if constant or a.size < 2 else float(kendalltau(a, b).statistic),
        "top_k_overlap": len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k,
        "cosine": float(a @ b / norm) if norm > 0 else float("nan"),
    }


def bootstrap_interval(values, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` (NaNs dropped) and its percentile-bootstrap 95% interval."""
    values = np.asarray([v for v in values if not np.isnan(v)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_resamples, values.size), replace=True).mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def explanation_agreement(
    teacher: list[np.ndarray], student: list[np.ndarray], top_k: float = 0.2, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Agreement of paired attributions over a set of examples, with the random-attribution baseline.

    Returns:
        `dict`: for each metric, `{"mean", "low", "high", "random", "n"}` (bootstrap 95% interval; `random` is the
        mean agreement of the teacher's attributions with standard-normal ones).
    """
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher attributions but {len(student)} student ones.")
    rng = np.random.default_rng(seed)
    per_example = [agreement(t, s, top_k) for t, s in zip(teacher, student)]
    random = [agreement(t, rng.standard_normal(np.size(t)), top_k) for t in teacher]
    report = {}
    for metric in AGREEMENT_METRICS:
        mean, low, high = bootstrap_interval([row[metric] for row in per_example], seed=seed)
        report[metric] = {
            "mean": mean, "low": low, "high": high,
            "random": bootstrap_interval([row[metric] for row in random], seed=seed)[0],
            "n": int(sum(not np.isnan(row[metric]) for row in per_example)),
        }  # fmt: skip
    return report
