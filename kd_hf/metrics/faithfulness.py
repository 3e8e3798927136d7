"""Are a model's explanations faithful to the model? Remove what the explanation ranks highest and watch the
probability of the explained class. This module measures the probabilities; the figures are computed from them by
the `faithfulness` evaluate module (`kd_hf/metrics/modules/faithfulness/`), the one implementation `kd-hf eval`,
`evaluate.load(module_path("faithfulness"))` and a metric Space share.

Features are words (text) or patch-grid cells (images), ranked by signed attribution, highest first. Removing a word
replaces its tokens with padding and masks them out of attention; removing a cell sets its pixels to 0 (the mean
image after normalisation).

- Comprehensiveness and sufficiency, AOPC as in ERASER (DeYoung et al., 2020, https://huggingface.co/papers/1911.03429):
  `comp = Σ_k [p(ŷ|x) − p(ŷ|x∖r_k)] / (|B| + 1)` and `suff = Σ_k [p(ŷ|x) − p(ŷ|r_k)] / (|B| + 1)` over the bins
  B = {1, 5, 10, 20, 50}% of the features (at least one feature each); the +1 is the k = 0 term, which is 0. Higher
  comprehensiveness and lower sufficiency are better. (ferret uses k = 10%…100% instead: the numbers differ.)
- Deletion and insertion AUC (Petsiuk et al., 2018, https://huggingface.co/papers/1806.07421): p(ŷ) as features are
  removed from the input (deletion, lower is better), or added to an empty input (insertion, higher is better), in
  `steps` equal fractions; area by the trapezoid rule over the fraction in [0, 1].
"""

import numpy as np
import torch

from .modules import compute
from .modules.faithfulness.faithfulness import FAITHFULNESS_METRICS, aopc, curve_auc, faithfulness_scores


__all__ = ["AOPC_BINS", "FAITHFULNESS_METRICS", "aopc", "curve_auc", "faithfulness", "faithfulness_scores"]

AOPC_BINS = (0.01, 0.05, 0.10, 0.20, 0.50)


def _perturb(inputs: dict, features: torch.Tensor, keep: torch.Tensor, pad_token_id: int) -> dict:
    """A batch of copies of one example, copy i keeping the features where `keep[i]` is True.

    `features` maps every position (token, or pixel) to its feature id, -1 for positions that always stay
    (special tokens).
    """
    always = features < 0
    kept = torch.where(always, True, keep[:, features.clamp_min(0)])  # [copies, positions]
    copies = keep.shape[0]
    if "pixel_values" in inputs:
        pixels = inputs["pixel_values"]
        return {"pixel_values": pixels * kept.view(copies, 1, *pixels.shape[-2:]).to(pixels.dtype)}
    batch = {k: v.expand(copies, -1) for k, v in inputs.items()}
    batch["input_ids"] = torch.where(kept, batch["input_ids"], pad_token_id)
    batch["attention_mask"] = batch["attention_mask"] * kept.to(batch["attention_mask"].dtype)
    return batch


def _probabilities(model, batch: dict, target: int) -> np.ndarray:
    with torch.no_grad():
        return model(**batch).logits.float().softmax(-1)[:, target].cpu().numpy()


def faithfulness(
    model, inputs: dict, features: torch.Tensor, scores, target: int, pad_token_id: int = 0, steps: int = 10
) -> dict[str, float | list[float]]:
    """Comprehensiveness, sufficiency and deletion/insertion AUC of one explanation of one example.

    Args:
        model (`PreTrainedModel`): the explained classifier.
        inputs (`dict[str, torch.Tensor]`): the example as a batch of one (`input_ids` + `attention_mask`, or
            `pixel_values`).
        features (`torch.Tensor`): feature id of each position: `[tokens]` word ids (-1 for special tokens) or
            `[height, width]` grid-cell ids.
        scores (`array-like`): one attribution per feature.
        target (`int`): the explained class.
        pad_token_id (`int`, *optional*, defaults to 0): what removed tokens become.
        steps (`int`, *optional*, defaults to 10): points of the deletion and insertion curves after the first.

    Returns:
        `dict`: `comprehensiveness`, `sufficiency`, `deletion_auc`, `insertion_auc`, and both curves.
    """
    scores = np.asarray(scores, dtype=float)
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    features = features.flatten() if "pixel_values" in inputs else features

    def top(k: int) -> torch.Tensor:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(order[:k])] = True
        return mask

    ks = [max(1, int(np.ceil(fraction * n))) for fraction in AOPC_BINS]
    counts = [int(round(i * n / steps)) for i in range(steps + 1)]
    keep = torch.stack(
        [torch.ones(n, dtype=torch.bool)]
        + [~top(k) for k in ks]  # comprehensiveness: without the top k
        + [top(k) for k in ks]  # sufficiency: only the top k
        + [~top(c) for c in counts]  # deletion curve
        + [top(c) for c in counts]  # insertion curve
    )
    probabilities = _probabilities(model, _perturb(inputs, features, keep, pad_token_id), target)
    full, rest = probabilities[0], probabilities[1:]
    without, only = rest[: len(ks)], rest[len(ks) : 2 * len(ks)]
    deletion, insertion = rest[2 * len(ks) : 2 * len(ks) + len(counts)], rest[2 * len(ks) + len(counts) :]
    figures = compute(
        "faithfulness",
        full_probability=[float(full)],
        comprehensiveness_probabilities=[without.tolist()],
        sufficiency_probabilities=[only.tolist()],
        deletion_curve=[deletion.tolist()],
        insertion_curve=[insertion.tolist()],
        curve_fractions=[(np.asarray(counts) / n).tolist()],
    )
    return {**figures, "deletion_curve": deletion.tolist(), "insertion_curve": insertion.tolist()}
