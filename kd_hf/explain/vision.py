"""Explanations of image classifiers: pixel maps from any explainer of `kd_hf.explain.registry`, and a pooled patch
grid to compare models.

Methods that compare with a baseline (integrated gradients, occlusion) use zero pixels (the mean image after
normalisation); `grad_cam` needs a CNN and `attention_rollout` a ViT-style model with eager attention.

Every map is also mean-pooled into a `grid_size` x `grid_size` patch grid (`Explanation.grid`), so that a CNN's and
a ViT's maps, or maps of different resolutions, can be compared cell by cell.
"""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .explanation import Explanation
from .inputs import IMAGE_BASELINE, image_inputs
from .kernels import onednn_linears
from .memory import keep_freed_memory
from .registry import explainer_names, get_explainer


IMAGE_METHODS = explainer_names("image")
# Interpolated or occluded images per forward pass on CPU (2 images x 32 steps): bounds memory, and is as fast as
# larger passes or faster (the MNIST ViT, 16 images per batch, freed memory kept: 0.024 s per image with 64 or 128,
# 0.025 with 256, 0.026 with 32; measured 2026-12-06).
MAX_INTERPOLATED_IMAGES = 64


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
    (`grid_size` defaults to the model's patch grid). `internal_batch_size` (defaults to 64 on CPU, all at once on a GPU)
    is captum's batch of interpolated or occluded images, at least `batch_size`.
    """
    explainer = get_explainer(method, "image")
    settings = {"n_steps": n_steps} if explainer.takes_n_steps else {}
    model.eval()
    device = next(model.parameters()).device
    grid_size = grid_size or patch_grid_size(model)
    targets = [target] * len(pixel_values) if target is None or isinstance(target, int) else list(target)
    if internal_batch_size is None and device.type == "cpu":  # on a GPU, every interpolated image of a batch at once
        internal_batch_size = MAX_INTERPOLATED_IMAGES
    if internal_batch_size is not None:  # captum runs at least one step of every image of the batch per pass
        internal_batch_size = max(internal_batch_size, batch_size)
    starts = range(0, len(pixel_values), batch_size)
    explanations = []
    show = progress or (progress is None and len(starts) > 1)
    with onednn_linears(device), keep_freed_memory(device):
        for start in tqdm(starts, desc=f"Explaining ({method})", disable=not show):
            pixels = pixel_values[start : start + batch_size].to(device)
            with torch.no_grad():
                logits = model(pixel_values=pixels).logits
            probabilities = logits.float().softmax(-1)
            chunk_targets = [t if t is not None else int(p.argmax()) for t, p in zip(targets[start:], probabilities)]
            inputs = image_inputs(
                model, pixels, grid_size, n_steps=n_steps, internal_batch_size=internal_batch_size, logits=logits
            )
            maps, delta = explainer.image(inputs, torch.tensor(chunk_targets, device=device))
            maps = maps.detach().float().cpu()
            grids = pool_to_grid(maps, grid_size)
            for i, label_id in enumerate(chunk_targets):
                explanations.append(
                    Explanation(
                        method=method, target=label_id, label=str(model.config.id2label[label_id]),
                        probability=float(probabilities[i, label_id]), scores=maps[i].numpy(), grid=grids[i].numpy(),
                        delta=float(delta[i]) if delta is not None else None,
                        settings={**settings, "baseline": IMAGE_BASELINE, "grid_size": grid_size},
                    )
                )  # fmt: skip
    return explanations
