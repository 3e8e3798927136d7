"""Explanations of image classifiers: pixel maps from captum, and a pooled patch grid to compare models.

Methods:
- `integrated_gradients`: captum's `IntegratedGradients` on the pixels from a zero baseline (the mean image after
  normalisation), summed over channels;
- `input_x_gradient` (`InputXGradient`, summed over channels) and `saliency` (`Saliency`, largest |gradient| over
  channels);
- `grad_cam`: captum's `LayerGradCam` on the last convolution of a CNN, upsampled to the image (Selvaraju et al.,
  2017, https://huggingface.co/papers/1610.02391);
- `attention_rollout` for ViT-style models (Abnar & Zuidema, 2020), upsampled from the patch grid.

Every map is also mean-pooled into a `grid_size` x `grid_size` patch grid (`Explanation.grid`), so that a CNN's and
a ViT's maps, or maps of different resolutions, can be compared cell by cell.
"""

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .explanation import Explanation
from .text import attention_rollout


IMAGE_METHODS = ("integrated_gradients", "input_x_gradient", "saliency", "grad_cam", "attention_rollout")


def patch_grid_size(model) -> int:
    """The model's own patch grid (ViT), else 7 (a ResNet's last feature map at 224 pixels)."""
    config = model.config
    if getattr(config, "patch_size", None) and getattr(config, "image_size", None):
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return size // config.patch_size
    return 7


def pool_to_grid(maps: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Mean-pool `[batch, height, width]` maps into `[batch, grid_size, grid_size]` cells."""
    return F.adaptive_avg_pool2d(maps[:, None].float(), grid_size)[:, 0]


def _last_convolution(model: nn.Module) -> nn.Module:
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions or getattr(model.config, "num_attention_heads", None):
        raise ValueError(f"`grad_cam` needs a CNN; {type(model).__name__} is not one. Use `attention_rollout`.")
    return convolutions[-1]


def _pixel_maps(model, pixels, target, method, n_steps, internal_batch_size):
    import captum.attr

    def forward(values):
        return model(pixel_values=values).logits

    if method == "integrated_gradients":
        maps, delta = captum.attr.IntegratedGradients(forward).attribute(
            pixels, torch.zeros_like(pixels), target=target, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )  # fmt: skip
        return maps.sum(1), delta
    if method == "input_x_gradient":
        return captum.attr.InputXGradient(forward).attribute(pixels, target=target).sum(1), None
    if method == "saliency":
        return captum.attr.Saliency(forward).attribute(pixels, target=target).amax(1), None
    if method == "grad_cam":
        cam = captum.attr.LayerGradCam(forward, _last_convolution(model)).attribute(
            pixels, target=target, relu_attributions=True
        )
        return captum.attr.LayerAttribution.interpolate(cam, pixels.shape[-2:], "bilinear")[:, 0], None
    if method == "attention_rollout":
        with torch.no_grad():
            attentions = model(pixel_values=pixels, output_attentions=True).attentions
        if not attentions:
            raise ValueError(f"{type(model).__name__} returns no attentions; load it with eager attention.")
        patches = attention_rollout(attentions)[:, 1:]  # drop the [CLS] token's own score
        side = int(patches.shape[-1] ** 0.5)
        grid = patches.reshape(-1, 1, side, side)
        return F.interpolate(grid, size=pixels.shape[-2:], mode="nearest")[:, 0], None
    raise ValueError(f"Unknown image explanation method {method!r}; use one of {list(IMAGE_METHODS)}.")


def explain_images(
    model,
    pixel_values: torch.Tensor,
    method: str = "integrated_gradients",
    target: int | list[int] | None = None,
    n_steps: int = 32,
    batch_size: int = 16,
    internal_batch_size: int | None = None,
    grid_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """Explain an image classifier's predictions on preprocessed `pixel_values` (`[batch, channels, h, w]`).

    Returns one `Explanation` per image: `scores` is the `[h, w]` pixel map, `grid` its pooled patch grid
    (`grid_size` defaults to the model's patch grid).
    """
    model.eval()
    device = next(model.parameters()).device
    grid_size = grid_size or patch_grid_size(model)
    targets = [target] * len(pixel_values) if target is None or isinstance(target, int) else list(target)
    starts = range(0, len(pixel_values), batch_size)
    explanations = []
    show = progress or (progress is None and len(starts) > 1)
    for start in tqdm(starts, desc=f"Explaining ({method})", disable=not show):
        pixels = pixel_values[start : start + batch_size].to(device)
        with torch.no_grad():
            probabilities = model(pixel_values=pixels).logits.float().softmax(-1)
        chunk_targets = [t if t is not None else int(p.argmax()) for t, p in zip(targets[start:], probabilities)]
        maps, delta = _pixel_maps(
            model, pixels, torch.tensor(chunk_targets, device=device), method, n_steps, internal_batch_size
        )
        maps = maps.detach().float().cpu()
        grids = pool_to_grid(maps, grid_size)
        for i, label_id in enumerate(chunk_targets):
            explanations.append(
                Explanation(
                    method=method, target=label_id, label=str(model.config.id2label[label_id]),
                    probability=float(probabilities[i, label_id]), scores=maps[i].numpy(), grid=grids[i].numpy(),
                    delta=float(delta[i]) if delta is not None else None,
                    settings={"n_steps": n_steps, "baseline": "zeros (the mean image)"}
                    if method == "integrated_gradients" else {"grid_size": grid_size},
                )
            )  # fmt: skip
    return explanations
