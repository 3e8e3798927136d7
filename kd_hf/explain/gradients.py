"""Gradient attributions that can be trained through.

captum's attribution methods detach their results; a student that must learn to *explain* like its teacher needs its
attribution as part of the graph (`create_graph=True`), so that the attribution loss can be back-propagated into the
student's weights (the double backward of e2KD, Parchami-Araghi et al., 2024, https://huggingface.co/papers/2402.03119).
These functions compute the same values as captum's `LayerGradientXActivation` (text, on the embedding output) and
`InputXGradient` / `Saliency` (images, on the pixels), and few-step integrated gradients as captum's
`LayerIntegratedGradients` / `IntegratedGradients` with its Gauss-Legendre rule at the same number of steps (the
attribution users look at, cheap enough to train through with 4-8 steps); tests/test_explain.py and
tests/test_attribution.py check them against captum.
"""

from collections.abc import Sequence

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn
from transformers.utils import ModelOutput


ATTRIBUTION_METHODS = ("input_x_gradient", "gradient", "integrated_gradients")


def _reduce(gradient: torch.Tensor, inputs: torch.Tensor, method: str, image: bool) -> torch.Tensor:
    if method == "input_x_gradient":
        values = gradient * inputs
        return values.sum(1) if image else values.sum(-1)  # channels of a pixel / dims of a token embedding
    if method == "gradient":
        return gradient.abs().amax(1) if image else gradient.norm(dim=-1)  # captum's Saliency / per-token norm
    raise ValueError(f"Unknown attribution method {method!r}; use one of {list(ATTRIBUTION_METHODS)}.")


def gradient_attribution(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    method: str = "input_x_gradient",
    create_graph: bool = False,
    n_steps: int = 8,
    special_ids: Sequence[int] = (),
    **forward_kwargs,
):
    """Attribution of the `target` logit to each input position, with the model's outputs from the same forward pass.

    Text models are attributed at the output of their input embeddings (per token: summed over the hidden dimension
    for `input_x_gradient`, the gradient's L2 norm for `gradient`); image models at the pixels (per pixel: summed over
    channels, or the largest absolute gradient over channels).

    Args:
        model (`nn.Module`): a sequence or image classifier (possibly wrapped, e.g. in DDP).
        inputs (`dict[str, torch.Tensor]`): its inputs (`input_ids`, ... or `pixel_values`), without labels.
        target (`torch.Tensor` of shape `[batch]`, *optional*): the class to explain per example; defaults to the
            model's own top-1 class.
        method (`str`, *optional*, defaults to `"input_x_gradient"`): `input_x_gradient` or `gradient`.
        create_graph (`bool`, *optional*, defaults to `False`): keep the graph so the attribution can be trained.
        n_steps (`int`, *optional*, defaults to 8): Gauss-Legendre points of `integrated_gradients`.
        special_ids (`Sequence[int]`, *optional*): token ids that the text baseline of `integrated_gradients` keeps
            (the tokenizer's `all_special_ids`); every other token becomes padding, as in `kd_hf.explain.text`.
        **forward_kwargs: passed to the forward pass (e.g. `output_attentions=True`).

    Returns:
        `tuple[torch.Tensor, ModelOutput]`: attributions `[batch, tokens]` or `[batch, height, width]`, and outputs.
    """
    if method == "integrated_gradients":
        return integrated_gradients(model, inputs, target, n_steps, special_ids, create_graph, **forward_kwargs)
    image = "pixel_values" in inputs
    with torch.enable_grad():
        if image:
            attributed = inputs["pixel_values"]
            if not attributed.requires_grad:
                attributed = attributed.detach().requires_grad_(True)
            outputs = model(**{**inputs, "pixel_values": attributed}, **forward_kwargs)
        else:
            embedding_layer = getattr(model, "module", model).get_input_embeddings()
            attributed = embedding_layer(inputs["input_ids"])
            if not attributed.requires_grad:  # a frozen teacher: the gradient is still needed at its embeddings
                attributed.requires_grad_(True)
            other_inputs = {k: v for k, v in inputs.items() if k != "input_ids"}
            outputs = model(inputs_embeds=attributed, **other_inputs, **forward_kwargs)
        if target is None:
            target = outputs.logits.detach().argmax(-1)
        selected = outputs.logits.gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(selected, attributed, create_graph=create_graph)
    return _reduce(gradient, attributed, method, image), outputs


def _first_rows(outputs: ModelOutput, rows: int) -> ModelOutput:
    """`outputs` of a batch whose first `rows` rows are the real inputs, cut to those rows."""

    def cut(value):
        if torch.is_tensor(value):
            return value[:rows]
        return tuple(cut(item) for item in value) if isinstance(value, tuple) else value

    return type(outputs)(**{name: cut(value) for name, value in outputs.items()})


def integrated_gradients(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    n_steps: int = 8,
    special_ids: Sequence[int] = (),
    create_graph: bool = False,
    **forward_kwargs,
):
    """Integrated gradients of the `target` logit with `n_steps` Gauss-Legendre points (captum's default rule), with
    the model's outputs on the real inputs from the same forward pass; see `gradient_attribution`.

    Text is attributed at the output of the input embeddings, from a baseline that keeps the `special_ids` tokens and
    pads the others (`[CLS] [PAD] ... [SEP]`), summed over the hidden dimension; images at the pixels from a zero
    baseline, summed over channels. One forward pass runs the real inputs and every interpolation point together.
    """
    step_sizes, alphas = approximation_parameters("gausslegendre")
    image = "pixel_values" in inputs
    with torch.enable_grad():
        if image:
            actual = inputs["pixel_values"]
            baseline = torch.zeros_like(actual)
            other_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
        else:
            embedding_layer = getattr(model, "module", model).get_input_embeddings()
            input_ids = inputs["input_ids"]
            special = torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device))
            pad_id = getattr(getattr(model, "module", model).config, "pad_token_id", None) or 0
            actual = embedding_layer(input_ids)
            baseline = embedding_layer(torch.where(special, input_ids, pad_id))
            other_inputs = {k: v for k, v in inputs.items() if k != "input_ids"}
        if not actual.requires_grad:  # a frozen teacher: the gradient is still needed at its inputs
            actual = actual.detach().requires_grad_(True)
        shape = (n_steps,) + (1,) * actual.dim()
        scale = torch.tensor(alphas(n_steps), dtype=actual.dtype, device=actual.device).view(shape)
        points = baseline + scale * (actual - baseline)  # [steps, batch, ...]
        rows = actual.shape[0]
        batch = torch.cat([actual, points.flatten(0, 1)])
        repeated = {k: v.repeat(n_steps + 1, *([1] * (v.dim() - 1))) for k, v in other_inputs.items()}
        name = "pixel_values" if image else "inputs_embeds"
        outputs = model(**{name: batch}, **repeated, **forward_kwargs)
        if target is None:
            target = outputs.logits[:rows].detach().argmax(-1)
        selected = outputs.logits[rows:].gather(1, target.repeat(n_steps)[:, None]).sum()
        (gradient,) = torch.autograd.grad(selected, points, create_graph=create_graph)
    weights = torch.tensor(step_sizes(n_steps), dtype=gradient.dtype, device=gradient.device).view(shape)
    attributions = (actual - baseline) * (weights * gradient).sum(0)
    return attributions.sum(1 if image else -1), _first_rows(outputs, rows)
