"""One model explaining one input: its class probabilities, latency, attributions and deletion curve.

Text is scored by whitespace words (a tokenizer's word scores summed into them, so that two tokenizers line up),
images by cells of the student's patch grid, painted over what the model saw on the card's diverging scale. A model
explains the class it is given by name (the teacher's), else its own top-1.
"""

import bisect
import time

import numpy as np
import torch

from .inputs import _token_limit
from .loading import _Model


DELETION_STEPS = 10  # points of the deletion curve after the first (nothing removed)
DISPLAY_SIDE = 320  # heatmap overlays are drawn at this size (tiny inputs are scaled up to be visible)
OVERLAY_OPACITY = 0.75  # of a ±1 score over an image: what the model saw stays visible under the strongest cells


def _forward(model, inputs: dict) -> tuple[np.ndarray, float]:
    """Class probabilities and the fastest of five forward passes after a warm-up one, in milliseconds (a shared CPU
    is noisy: the fastest pass is the model's own cost)."""
    times = []
    with torch.no_grad():
        model(**inputs)
        for _ in range(5):
            start = time.perf_counter()
            logits = model(**inputs).logits
            times.append(time.perf_counter() - start)
    return logits.float().softmax(-1)[0].numpy(), 1000 * min(times)


def _target(explainer: _Model, teacher_label: str | None, probabilities: np.ndarray) -> int:
    """The explained class in this model's label ids: the teacher's class by name, else the model's own top-1."""
    label2id = {str(label): i for i, label in explainer.model.config.id2label.items()}
    return label2id.get(teacher_label, int(probabilities.argmax()))


# ---- text -------------------------------------------------------------------------------------------------------


def _to_words(explanation, text: str, starts: list[int]) -> np.ndarray:
    """Sum a tokenizer's word scores into the whitespace words of `text` (whose start offsets are `starts`)."""
    scores, cursor = np.zeros(len(starts)), 0
    for word, score in zip(explanation.words, explanation.scores):
        at = text.find(word, cursor)
        if at < 0:
            continue
        cursor = at + len(word)
        scores[bisect.bisect_right(starts, at) - 1] += score
    return scores


def _explain_text(entry: _Model, text: str, starts: list[int], method: str, steps: int, teacher_label):
    """`entry`'s probabilities, latency (ms), explanation time (ms), word explanation and deletion curve for `text`,
    whose whitespace words start at `starts`."""
    from ..explain import Explanation, explain_text
    from ..metrics.faithfulness import faithfulness

    encoded = entry.processor(
        [text], truncation=True, max_length=_token_limit(entry), return_tensors="pt",
        return_offsets_mapping=True, return_special_tokens_mask=True,
    )  # fmt: skip
    offsets, special = encoded.pop("offset_mapping")[0], encoded.pop("special_tokens_mask")[0]
    probabilities, latency = _forward(entry.model, dict(encoded))
    target = _target(entry, teacher_label, probabilities)
    start = time.perf_counter()
    [explanation] = explain_text(
        entry.model, entry.processor, [text], method, target, n_steps=steps, internal_batch_size=16,
        max_length=_token_limit(entry), progress=False,
    )  # fmt: skip
    scores = _to_words(explanation, text, starts)
    features = torch.tensor(
        [-1 if s or b == e else bisect.bisect_right(starts, int(e) - 1) - 1 for s, (b, e) in zip(special, offsets)]
    )
    pad = entry.processor.pad_token_id or 0
    deletion = faithfulness(entry.model, dict(encoded), features, scores, target, pad, DELETION_STEPS)
    words = Explanation(method, target, explanation.label, explanation.probability, scores)
    return probabilities, latency, 1000 * (time.perf_counter() - start), words, deletion


def _highlights(words: list[str], scores: np.ndarray) -> list[tuple[str, float | None]]:
    """The words and their scores as `gr.HighlightedText` shows them (the spaces between them unscored)."""
    pairs = []
    for word, score in zip(words, scores):
        pairs += [(word, round(float(score), 4)), (" ", None)]
    return pairs[:-1]


# ---- images -----------------------------------------------------------------------------------------------------


def _pixels(entry: _Model, image) -> torch.Tensor:
    """`image` as `entry` sees it: its processor's pixel values, in the model's number of channels."""
    mode = "L" if getattr(entry.model.config, "num_channels", 3) == 1 else "RGB"
    encoded = entry.processor(image.convert(mode), return_tensors="np", input_data_format="channels_last")
    return torch.as_tensor(encoded["pixel_values"]).float()


def _overlay(pixels: torch.Tensor, scores: np.ndarray) -> np.ndarray:
    """What the model saw (its own pixels, min-max scaled) with its scores in [-1, 1] painted over it."""
    import PIL.Image

    from ..explain.explanation import score_rgba

    view = pixels.mean(0, keepdim=True) if pixels.shape[0] != 3 else pixels
    view = (view - view.min()) / (view.max() - view.min()).clamp_min(1e-8)
    view = (view.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    height, width = view.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = PIL.Image.NEAREST if scale >= 1 else PIL.Image.BILINEAR
    base = np.asarray(PIL.Image.fromarray(view).resize(size, resample), dtype=float)
    heat = np.asarray(PIL.Image.fromarray(scores.astype(np.float32)).resize(size, resample))
    paint = score_rgba(heat, OVERLAY_OPACITY)  # the card's scale, as its PNGs paint it
    alpha = paint[..., 3:]
    return (base * (1 - alpha) + 255 * paint[..., :3] * alpha).round().astype(np.uint8)


def _explain_image(entry: _Model, image, grid: int, method: str, steps: int, teacher_label):
    """`entry`'s probabilities, latency (ms), explanation time (ms), `grid`×`grid` explanation, deletion curve and
    heatmap overlay for `image`."""
    from ..explain import explain_images
    from ..explain.inputs import grid_cells
    from ..metrics.faithfulness import faithfulness

    pixels = _pixels(entry, image)
    probabilities, latency = _forward(entry.model, {"pixel_values": pixels})
    target = _target(entry, teacher_label, probabilities)
    start = time.perf_counter()
    [explanation] = explain_images(  # pixels that already require gradients keep captum from warning
        entry.model, pixels.clone().requires_grad_(True), method, target, steps, internal_batch_size=16,
        grid_size=grid, progress=False,
    )  # fmt: skip
    cells = grid_cells(*pixels.shape[-2:], grid)
    deletion = faithfulness(
        entry.model, {"pixel_values": pixels}, cells, explanation.grid.ravel(), target, 0, DELETION_STEPS
    )
    overlay = _overlay(pixels[0], explanation.normalized())
    return probabilities, latency, 1000 * (time.perf_counter() - start), explanation, deletion, overlay
