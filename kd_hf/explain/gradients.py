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

from .registry import EXPLAINERS


# The explainers that can be trained through, by their name here; and back: the explanation method that computes the
# same attribution, to judge a student by what it learnt.
EXPLAINED_AS = {e.attribution: name for name, e in EXPLAINERS.items() if e.attribution is not None}
ATTRIBUTION_METHODS = tuple(EXPLAINED_AS)


def _reduce(gradient: torch.Tensor, inputs: torch.Tensor, method: str, image: bool) -> torch.Tensor:
    if method == "input_x_gradient":
        values = gradient * inputs
        return values.sum(1) if image else values.sum(-1)  # channels of a pixel / dims of a token embedding
    return gradient.abs().amax(1) if image else gradient.norm(dim=-1)  # `gradient`: captum's Saliency / token norm


def gradient_attribution(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    method: str = "input_x_gradient",
    create_graph: bool = False,
    n_steps: int = 8,
    special_ids: Sequence[int] = (),
    rows: int | None = None,
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
        method (`str`, *optional*, defaults to `"input_x_gradient"`): `input_x_gradient`, `gradient` or
            `integrated_gradients`.
        create_graph (`bool`, *optional*, defaults to `False`): keep the graph so the attribution can be trained.
        n_steps (`int`, *optional*, defaults to 8): Gauss-Legendre points of `integrated_gradients`.
        special_ids (`Sequence[int]`, *optional*): token ids that the text baseline of `integrated_gradients` keeps
            (the tokenizer's `all_special_ids`); every other token becomes padding, as in `kd_hf.explain.text`.
        rows (`int`, *optional*): attribute only the first `rows` examples (default: all). The outputs still cover
            the whole batch; the gradients (and a double backward through them) run on copies of those rows alone.
        **forward_kwargs: passed to the forward pass (e.g. `output_attentions=True`).

    Returns:
        `tuple[torch.Tensor, ModelOutput]`: attributions `[rows, tokens]` or `[rows, height, width]`, and the outputs
        of the whole batch.
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; use one of {list(ATTRIBUTION_METHODS)}.")
    if method == "integrated_gradients":
        return integrated_gradients(model, inputs, target, n_steps, special_ids, create_graph, rows, **forward_kwargs)
    image = "pixel_values" in inputs
    batch = len(inputs["pixel_values" if image else "input_ids"])
    if rows is not None and rows < batch:
        # The first rows again, appended to the batch as the one point at which the gradient is taken.
        with torch.enable_grad():
            name, actual, _, other_inputs = _attributed_input(model, inputs, special_ids=())
            points = actual[:rows].unsqueeze(0)
            gradient, outputs = _gradients_at(model, name, actual, points, other_inputs, target, create_graph,
                                              forward_kwargs)  # fmt: skip
        return _reduce(gradient[0], points[0], method, image), outputs
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


def first_rows(outputs: ModelOutput, rows: int) -> ModelOutput:
    """`outputs` of a batch whose first `rows` rows are the real inputs, cut to those rows."""

    def cut(value):
        if torch.is_tensor(value):
            return value[:rows]
        return tuple(cut(item) for item in value) if isinstance(value, tuple) else value

    return type(outputs)(**{name: cut(value) for name, value in outputs.items()})


def _attributed_input(model: nn.Module, inputs: dict, special_ids: Sequence[int]):
    """The input that attributions are taken at, with its baseline: the pixels and zeros for images; for text, the
    token embeddings and those of the text with every token but `special_ids` replaced by padding.

    Returns the forward argument's name, the input `[batch, ...]` (requiring grad), the baseline and the other inputs.
    """
    if "pixel_values" in inputs:
        name, actual = "pixel_values", inputs["pixel_values"]
        baseline = torch.zeros_like(actual)
    else:
        embedding_layer = getattr(model, "module", model).get_input_embeddings()
        input_ids = inputs["input_ids"]
        special = torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device))
        pad_id = getattr(getattr(model, "module", model).config, "pad_token_id", None) or 0
        name, actual = "inputs_embeds", embedding_layer(input_ids)
        baseline = embedding_layer(torch.where(special, input_ids, pad_id))
    if not actual.requires_grad:  # a frozen teacher: the gradient is still needed at its inputs
        actual = actual.detach().requires_grad_(True)
    other_inputs = {k: v for k, v in inputs.items() if k not in ("pixel_values", "input_ids")}
    return name, actual, baseline, other_inputs


def _gradients_at(model, name, actual, points, other_inputs, target, create_graph, forward_kwargs):
    """One forward pass of the real batch `actual` followed by `points` `[steps, rows, ...]` (inputs of its first
    `rows` examples); the gradient of the `target` logit at each point, and the outputs of the real batch."""
    steps, rows = points.shape[:2]
    batch = torch.cat([actual, points.flatten(0, 1)])
    repeated = {k: torch.cat([v, v[:rows].repeat(steps, *([1] * (v.dim() - 1)))]) for k, v in other_inputs.items()}
    outputs = model(**{name: batch}, **repeated, **forward_kwargs)
    real = len(actual)
    if target is None:
        target = outputs.logits[:real].detach().argmax(-1)
    selected = outputs.logits[real:].gather(1, target[:rows].repeat(steps)[:, None]).sum()
    (gradient,) = torch.autograd.grad(selected, points, create_graph=create_graph)
    return gradient, first_rows(outputs, real)


def integrated_gradients(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    n_steps: int = 8,
    special_ids: Sequence[int] = (),
    create_graph: bool = False,
    rows: int | None = None,
    **forward_kwargs,
):
    """Integrated gradients of the `target` logit with `n_steps` Gauss-Legendre points (captum's default rule), with
    the model's outputs on the real inputs from the same forward pass; see `gradient_attribution`.

    Text is attributed at the output of the input embeddings, from a baseline that keeps the `special_ids` tokens and
    pads the others (`[CLS] [PAD] ... [SEP]`), summed over the hidden dimension; images at the pixels from a zero
    baseline, summed over channels. One forward pass runs the real inputs and the interpolation points of the first
    `rows` of them (all by default) together.
    """
    step_sizes, alphas = approximation_parameters("gausslegendre")
    image = "pixel_values" in inputs
    with torch.enable_grad():
        name, actual, baseline, other_inputs = _attributed_input(model, inputs, special_ids)
        rows = len(actual) if rows is None else min(rows, len(actual))
        difference = actual[:rows] - baseline[:rows]
        shape = (n_steps,) + (1,) * actual.dim()
        scale = torch.tensor(alphas(n_steps), dtype=actual.dtype, device=actual.device).view(shape)
        points = baseline[:rows] + scale * difference  # [steps, rows, ...]
        gradient, outputs = _gradients_at(model, name, actual, points, other_inputs, target, create_graph,
                                          forward_kwargs)  # fmt: skip
    weights = torch.tensor(step_sizes(n_steps), dtype=gradient.dtype, device=gradient.device).view(shape)
    attributions = difference * (weights * gradient).sum(0)
    return attributions.sum(1 if image else -1), outputs
