"""Gradient attributions that can be trained through.

captum's attribution methods detach their results; a student that must learn to *explain* like its teacher needs its
attribution as part of the graph (`create_graph=True`), so that the attribution loss can be back-propagated into the
student's weights (the double backward of e2KD, Parchami-Araghi et al., 2024, https://huggingface.co/papers/2402.03119).
These functions compute the same values as captum's `LayerGradientXActivation` (text, on the embedding output) and
`InputXGradient` / `Saliency` (images, on the pixels); tests/test_explain.py checks them against captum.
"""

import torch
from torch import nn


ATTRIBUTION_METHODS = ("input_x_gradient", "gradient")


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
        **forward_kwargs: passed to the forward pass (e.g. `output_attentions=True`).

    Returns:
        `tuple[torch.Tensor, ModelOutput]`: attributions `[batch, tokens]` or `[batch, height, width]`, and outputs.
    """
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
