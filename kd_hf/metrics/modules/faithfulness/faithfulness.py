"""Faithfulness: does removing what an explanation ranks highest change the model's mind?

The figures are computed from the probability of the explained class as features are removed (or kept) in the order
the explanation ranks them, highest first; measuring those probabilities needs the model and is left to the caller
(`kd_hf.metrics.faithfulness.faithfulness` does it for Hugging Face classifiers).

- Comprehensiveness and sufficiency, AOPC as in ERASER (DeYoung et al., 2020, https://huggingface.co/papers/1911.03429):
  `comp = Σ_k [p(ŷ|x) − p(ŷ|x∖r_k)] / (|B| + 1)` and `suff = Σ_k [p(ŷ|x) − p(ŷ|r_k)] / (|B| + 1)` over the removal
  bins B (kd_hf uses 1, 5, 10, 20, 50% of the features); the +1 is the k = 0 term, which is 0. Higher
  comprehensiveness and lower sufficiency are better.
- Deletion and insertion AUC (Petsiuk et al., 2018, https://huggingface.co/papers/1806.07421): p(ŷ) as features are
  removed from the input (deletion, lower is better), or added to an empty input (insertion, higher is better); area
  by the trapezoid rule over the fraction of features removed (added), in [0, 1].

This file is both an `evaluate` metric module (`evaluate.load(kd_hf.metrics.module_path("faithfulness"))`, or a
metric Space) and the implementation `kd_hf.metrics.faithfulness` imports: it needs no kd_hf to run.
"""

import datasets
import evaluate
import numpy as np


FAITHFULNESS_METRICS = ("comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc")
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 (a metric Space's gradio 3) has only `trapz`

_CITATION = """\
@inproceedings{deyoung2020eraser,
  title={{ERASER}: A Benchmark to Evaluate Rationalized {NLP} Models},
  author={DeYoung, Jay and Jain, Sarthak and Rajani, Nazneen Fatema and Lehman, Eric and Xiong, Caiming
          and Socher, Richard and Wallace, Byron C.},
  booktitle={Proceedings of the 58th Annual Meeting of the Association for Computational Linguistics},
  pages={4443--4458},
  year={2020}
}
@inproceedings{petsiuk2018rise,
  title={{RISE}: Randomized Input Sampling for Explanation of Black-box Models},
  author={Petsiuk, Vitali and Das, Abir and Saenko, Kate},
  booktitle={British Machine Vision Conference (BMVC)},
  year={2018}
}
"""

_KWARGS_DESCRIPTION = """
Args, one entry per explained example, each a probability of the explained class:
    full_probability (`list` of `float`): on the whole input.
    comprehensiveness_probabilities (`list` of `list` of `float`): with the top-ranked features removed, one per
        removal bin (e.g. the top 1, 5, 10, 20, 50%).
    sufficiency_probabilities (`list` of `list` of `float`): with only the top-ranked features kept, one per bin.
    deletion_curve (`list` of `list` of `float`): as the top-ranked features are removed, from none to all.
    insertion_curve (`list` of `list` of `float`): as the top-ranked features are added to an empty input.
    curve_fractions (`list` of `list` of `float`): the fraction of the features removed (added) at each point of
        both curves, from 0 to 1.

Returns:
    `comprehensiveness` (AOPC, higher is better), `sufficiency` (AOPC, lower is better), `deletion_auc` (lower is
    better) and `insertion_auc` (higher is better), each the mean over the examples (for one example, its own).

Examples:
    >>> faithfulness = evaluate.load(kd_hf.metrics.module_path("faithfulness"))
    >>> faithfulness.compute(
    ...     full_probability=[1.0],
    ...     comprehensiveness_probabilities=[[0.25, 0.5]],
    ...     sufficiency_probabilities=[[0.75, 0.5]],
    ...     deletion_curve=[[1.0, 0.5, 0.0]],
    ...     insertion_curve=[[0.25, 0.75, 1.0]],
    ...     curve_fractions=[[0.0, 0.5, 1.0]],
    ... )
    {'comprehensiveness': 0.4166666666666667, 'sufficiency': 0.25, 'deletion_auc': 0.5, 'insertion_auc': 0.6875}
"""


def aopc(full_probability: float, probabilities) -> float:
    """ERASER's area over the perturbation curve: `Σ_k (p_full − p_k) / (|B| + 1)` over the bins' probabilities."""
    probabilities = np.asarray(probabilities, dtype=float)
    return float((full_probability - probabilities).sum() / (probabilities.size + 1))


def curve_auc(curve, fractions) -> float:
    """Area under a deletion or insertion curve, by the trapezoid rule over the fraction of features."""
    curve, fractions = np.asarray(curve, dtype=float), np.asarray(fractions, dtype=float)
    if curve.shape != fractions.shape:
        raise ValueError(f"A curve of {curve.size} points but {fractions.size} fractions; pass one fraction a point.")
    return float(_trapezoid(curve, fractions))


def faithfulness_scores(
    full_probability: float, comprehensiveness_probabilities, sufficiency_probabilities, deletion_curve,
    insertion_curve, curve_fractions,
) -> dict[str, float]:  # fmt: skip
    """Comprehensiveness, sufficiency and deletion/insertion AUC of one explanation from its measured probabilities."""
    return {
        "comprehensiveness": aopc(full_probability, comprehensiveness_probabilities),
        "sufficiency": aopc(full_probability, sufficiency_probabilities),
        "deletion_auc": curve_auc(deletion_curve, curve_fractions),
        "insertion_auc": curve_auc(insertion_curve, curve_fractions),
    }


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class Faithfulness(evaluate.Metric):
    def _info(self):
        probabilities = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "full_probability": datasets.Value("float64"),
                    "comprehensiveness_probabilities": probabilities,
                    "sufficiency_probabilities": probabilities,
                    "deletion_curve": probabilities,
                    "insertion_curve": probabilities,
                    "curve_fractions": probabilities,
                }
            ),
            reference_urls=["https://huggingface.co/papers/1911.03429", "https://huggingface.co/papers/1806.07421"],
        )

    def _compute(
        self,
        full_probability,
        comprehensiveness_probabilities,
        sufficiency_probabilities,
        deletion_curve,
        insertion_curve,
        curve_fractions,
    ):
        examples = zip(
            full_probability,
            comprehensiveness_probabilities,
            sufficiency_probabilities,
            deletion_curve,
            insertion_curve,
            curve_fractions,
        )
        rows = [faithfulness_scores(*example) for example in examples]
        return {
            metric: float(np.mean([row[metric] for row in rows])) if rows else float("nan")
            for metric in FAITHFULNESS_METRICS
        }
