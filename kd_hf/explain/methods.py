"""The gradient and attention explainers of `kd_hf.explain.registry`, computed by captum.

Each takes `AttributionInputs` and the target class per example, and returns `(scores, delta)`: one score per token
`[batch, tokens]` or per pixel `[batch, height, width]`, and integrated gradients' convergence delta (else `None`).

- `integrated_gradients`: captum's `IntegratedGradients` from the baseline (Sundararajan et al., 2017,
  https://huggingface.co/papers/1703.01365), summed over the hidden dimension or the channels.
- `input_x_gradient`: captum's `InputXGradient`, summed likewise.
- `saliency`: the gradient's L2 norm per token; its largest |value| over channels per pixel (captum's `Saliency`).
- `attention_rollout`: attention flow from the first token through all layers (Abnar & Zuidema, 2020,
  https://huggingface.co/papers/2005.00928); needs eager attention. For images, the patches' flow into [CLS],
  upsampled from the patch grid.
- `grad_cam`: captum's `LayerGradCam` on the last convolution of a CNN, upsampled to the image (Selvaraju et al.,
  2017, https://huggingface.co/papers/1610.02391).
"""

import torch
import torch.nn.functional as F
from torch import nn


def _sum_features(attributions: torch.Tensor, image: bool) -> torch.Tensor:
    return attributions.sum(1 if image else -1)  # the channels of a pixel, the hidden dimension of a token


def integrated_gradients(inputs, target):
    from captum.attr import IntegratedGradients

    attributions = IntegratedGradients(inputs.forward).attribute(
        inputs.values, inputs.baseline, target=target, additional_forward_args=inputs.additional_args,
        n_steps=inputs.n_steps, internal_batch_size=inputs.internal_batch_size,
    )  # fmt: skip
    return _sum_features(attributions, inputs.image), convergence_delta(inputs, attributions, target)


def convergence_delta(inputs, attributions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ attributions − (f(input) − f(baseline)) for the target of each example, captum's convergence delta, from
    `AttributionInputs.endpoint_logits` (which reuses the logits the caller has)."""
    end, start = inputs.endpoint_logits()
    rows = torch.arange(len(target), device=end.device)
    return attributions.detach().flatten(1).sum(1) - (end[rows, target] - start[rows, target])


def input_x_gradient(inputs, target):
    from captum.attr import InputXGradient

    attributions = InputXGradient(inputs.forward).attribute(
        inputs.values, target=target, additional_forward_args=inputs.additional_args
    )
    return _sum_features(attributions, inputs.image), None


def saliency(inputs, target):
    from captum.attr import Saliency

    gradient = Saliency(inputs.forward).attribute(
        inputs.values, target=target, additional_forward_args=inputs.additional_args
    )
    return (gradient.amax(1) if inputs.image else gradient.norm(dim=-1)), None


def attention_rollout(attentions: tuple[torch.Tensor, ...], mask: torch.Tensor | None = None) -> torch.Tensor:
    """How much each token flows into the first token ([CLS]) through every layer: `[batch, tokens]`.

    Each layer's head-averaged attention is mixed with the identity (the residual path), renormalised, and the
    layers are multiplied from the first to the last.
    """
    rollout = None
    for layer in attentions:
        attention = layer.float().mean(1)
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    scores = rollout[:, 0]
    return scores * mask if mask is not None else scores


def _attentions(inputs) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        attentions = inputs.outputs(output_attentions=True).attentions
    if not attentions:
        raise ValueError(f"{type(inputs.model).__name__} returns no attentions; load it with eager attention.")
    return attentions


def attention_rollout_text(inputs, target):
    return attention_rollout(_attentions(inputs), inputs.forward_args.get("attention_mask")), None


def attention_rollout_image(inputs, target):
    patches = attention_rollout(_attentions(inputs))[:, 1:]  # drop the [CLS] token's own score
    side = int(patches.shape[-1] ** 0.5)
    grid = patches.reshape(-1, 1, side, side)
    return F.interpolate(grid, size=inputs.values.shape[-2:], mode="nearest")[:, 0], None


def _last_convolution(model: nn.Module) -> nn.Module:
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions or getattr(model.config, "num_attention_heads", None):
        raise ValueError(f"`grad_cam` needs a CNN; {type(model).__name__} is not one. Use `attention_rollout`.")
    return convolutions[-1]


def grad_cam(inputs, target):
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(inputs.forward, _last_convolution(inputs.model)).attribute(
        inputs.values, target=target, relu_attributions=True
    )
    return LayerAttribution.interpolate(cam, inputs.values.shape[-2:], "bilinear")[:, 0], None
