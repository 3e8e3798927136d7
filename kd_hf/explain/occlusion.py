"""Occlusion (Zeiler & Fergus, 2014, https://huggingface.co/papers/1311.2901): how much the target's logit drops when
one word, or one patch-grid cell, is replaced by the baseline ([PAD] for each of the word's tokens, zero pixels).

Deterministic, needs no gradient, and costs one forward pass per word or cell. captum's `FeatureAblation` does the
replacing, with words and cells as its feature groups (its subclass `Occlusion` slides a window of fixed size, and a
word spans any number of tokens).

```python
from kd_hf.explain import explain_text

[explanation] = explain_text(model, tokenizer, ["a quiet triumph"], method="occlusion")
```
"""

import torch


def _drops(inputs, target) -> torch.Tensor:
    from captum.attr import FeatureAblation

    copies = max(1, (inputs.internal_batch_size or 64) // len(inputs.values))  # occluded copies per forward pass
    return FeatureAblation(inputs.forward).attribute(
        inputs.values, baselines=inputs.baseline, target=target, additional_forward_args=inputs.additional_args,
        feature_mask=inputs.features, perturbations_per_eval=copies,
    )  # fmt: skip


def occlusion_text(inputs, target):
    """Per token, its word's drop shared equally among the word's tokens, which sum back to it in a word."""
    drops = _drops(inputs, target)[..., 0]  # every hidden unit of a token holds its word's drop
    words = inputs.features[..., 0]
    tokens_per_word = (words[:, :, None] == words[:, None, :]).sum(-1)
    return drops / tokens_per_word, None


def occlusion_image(inputs, target):
    """Per pixel, its cell's drop: the cell's score on the patch grid."""
    return _drops(inputs, target)[:, 0], None
