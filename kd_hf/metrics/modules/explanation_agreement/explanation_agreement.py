"""Explanation agreement: do a student's attributions rank the features as its teacher's do?

Per example, between two attribution vectors over the same words (text) or patch-grid cells (images): Spearman's
rho and Kendall's tau-b of the *signed* scores (scipy), the overlap of the top-k features by signed score
(`|top_k(a_T) & top_k(a_S)| / k`, k a fraction of the features), and cosine similarity; Krishna et al. (2022,
https://huggingface.co/papers/2202.01602) compare explainers by such figures. Each figure is averaged over examples
with a bootstrap 95% interval, next to its chance level on the same examples: the figure's expected value when the
student's scores are shuffled at random, which is what "no agreement" looks like. It is exact, not a draw: 0 for the
rank correlations, k/n for top-k overlap (not 0: two random top-20% sets share a fifth of their features) and
`Σa_T Σa_S / (n ‖a_T‖ ‖a_S‖)` for cosine (not 0 either when both maps are mostly positive, as saliency's are).

This file is both an `evaluate` metric module (`evaluate.load(kd_hf.metrics.module_path("explanation_agreement"))`,
or a metric Space) and the implementation `kd_hf.metrics.explanation` imports: it needs no kd_hf to run.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import kendalltau, spearmanr


AGREEMENT_METRICS = ("spearman", "kendall", "top_k_overlap", "cosine")

_CITATION = """\
@article{krishna2022disagreement,
  title={The Disagreement Problem in Explainable Machine Learning: A Practitioner's Perspective},
  author={Krishna, Satyapriya and Han, Tessa and Gu, Alex and Pombra, Javin and Jabbari, Shahin and Wu, Steven
          and Lakkaraju, Himabindu},
  journal={arXiv preprint arXiv:2202.01602},
  year={2022}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): the student's attributions, one vector per example (one score per
        word, or per patch-grid cell with the grid flattened). Lengths may differ between examples.
    references (`list` of `list` of `float`): the teacher's attributions of the same examples, each the length of
        the student's.
    top_k (`float`, *optional*, defaults to 0.2): the fraction of features whose top-k sets are compared (at least
        one feature).
    seed (`int`, *optional*, defaults to 0): seed of the bootstrap resampling.

Returns:
    For each of `spearman`, `kendall`, `top_k_overlap` and `cosine`, a dict: `mean` over the examples where the
    figure is defined (rank correlations are not when a vector is constant or has one feature), `low` and `high`
    (percentile-bootstrap 95% interval), `random` (the chance level: the figure's expected value with the student's
    scores shuffled, averaged over the same examples) and `n` (examples where the figure is defined). NaN where no
    example defines it.

Examples:
    >>> agreement = evaluate.load(kd_hf.metrics.module_path("explanation_agreement"))
    >>> results = agreement.compute(predictions=[[0.1, 0.5, 0.9]], references=[[1.0, 2.0, 3.0]])
    >>> results["spearman"]["mean"], results["spearman"]["random"], results["cosine"]["mean"] > 0.9
    (1.0, 0.0, True)
"""


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


def chance_agreement(a: np.ndarray, b: np.ndarray, top_k: float = 0.2) -> dict[str, float]:
    """The expected `agreement(a, b, top_k)` when `b`'s scores are shuffled uniformly at random (NaN where
    `agreement` is undefined). Over every permutation, a position of `b` holds each score equally often: the rank
    correlations average 0, a top-k set is a random k of the n features (so k * k/n of them are shared), and
    `E[a @ b] = n mean(a) mean(b)`.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Attributions cover different features ({a.size} vs {b.size}); align them first.")
    k = max(1, int(round(top_k * a.size)))
    undefined = np.ptp(a) == 0 or np.ptp(b) == 0 or a.size < 2
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return {
        "spearman": float("nan") if undefined else 0.0,
        "kendall": float("nan") if undefined else 0.0,
        "top_k_overlap": k / a.size,
        "cosine": float(a.sum() * b.sum() / (a.size * norm)) if norm > 0 else float("nan"),
    }


def bootstrap_interval(values, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` (NaNs dropped) and its percentile-bootstrap 95% interval."""
    values = np.asarray([v for v in values if not np.isnan(v)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_resamples, values.size), replace=True).mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def agreement_report(teacher, student, top_k: float = 0.2, seed: int = 0) -> dict[str, dict[str, float]]:
    """Agreement of paired attributions over a set of examples, with the random-attribution baseline.

    Returns:
        `dict`: for each metric, `{"mean", "low", "high", "random", "n"}` (bootstrap 95% interval; `random` is the
        chance level, `chance_agreement` averaged over the examples where the metric is defined).
    """
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher attributions but {len(student)} student ones.")
    per_example = [agreement(t, s, top_k) for t, s in zip(teacher, student)]
    random = [chance_agreement(t, s, top_k) for t, s in zip(teacher, student)]
    report = {}
    for metric in AGREEMENT_METRICS:
        mean, low, high = bootstrap_interval([row[metric] for row in per_example], seed=seed)
        report[metric] = {
            "mean": mean, "low": low, "high": high,
            "random": bootstrap_interval([row[metric] for row in random], seed=seed)[0],
            "n": int(sum(not np.isnan(row[metric]) for row in per_example)),
        }  # fmt: skip
    return report


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class ExplanationAgreement(evaluate.Metric):
    def _info(self):
        # float64: float32 would round the callers' scores, and with them ties, ranks and the last digits
        attributions = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": attributions, "references": attributions}),
            reference_urls=["https://huggingface.co/papers/2202.01602"],
        )

    def _compute(self, predictions, references, top_k=0.2, seed=0):
        return agreement_report(references, predictions, top_k, seed)
