"""Explanations that survive quantisation: occlusion on the ONNX graphs, compared with the same occlusion on the
PyTorch student and on the teacher.

An int8 graph has no gradients, so its explanations are occlusion's (Zeiler & Fergus, 2014,
https://huggingface.co/papers/1311.2901): the drop of the explained class's logit when one word, or one patch-grid
cell, is replaced by the baseline. The baseline is `kd_hf.explain.occlusion`'s, so that the PyTorch models are explained
by `explain_text` / `explain_images` with `method="occlusion"` and the graphs here give the same scores: every token of
the word becomes [PAD] (special tokens and the attention mask are kept; [PAD]'s id in place of the token's is what
`kd_hf.explain` does at the input embeddings), or every pixel of the cell becomes 0 (the mean image).

```python
from kd_hf.export.occlusion import occlude_texts

scores = occlude_texts(OnnxClassifier("outputs/student/onnx/model_quantized.onnx"), tokenizer, texts, targets)
```
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from ..explain import explain_images, explain_text
from ..explain.inputs import grid_cells, word_features
from ..metrics.explanation import explanation_agreement
from .runtime import OnnxClassifier


ROWS_PER_RUN = 64  # occluded copies per session run: bounds the memory of large images


def _logits_in_chunks(classifier: OnnxClassifier, batch: dict[str, np.ndarray]) -> np.ndarray:
    rows = len(next(iter(batch.values())))
    return np.concatenate(
        [classifier.logits({k: v[start : start + ROWS_PER_RUN] for k, v in batch.items()})
         for start in range(0, rows, ROWS_PER_RUN)]
    )  # fmt: skip


def occlude_texts(
    classifier: OnnxClassifier, tokenizer, texts: list[str], targets: list[int], pad_token_id: int = 0,
    max_length: int = 128,
) -> list[np.ndarray]:  # fmt: skip
    """Per text, the drop of `targets[i]`'s logit when each word is replaced by [PAD] (`pad_token_id`: the model
    config's, as `kd_hf.explain` takes it), in the words' reading order (`kd_hf.explain.merge_words`'s)."""
    scores = []
    for text, target in tqdm(list(zip(texts, targets)), desc="Occlusion (ONNX)", leave=False):
        encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np",
                            return_special_tokens_mask=True)  # fmt: skip
        special = torch.from_numpy(encoded["special_tokens_mask"])
        words = word_features(torch.from_numpy(encoded["input_ids"]), special, encoded.encodings)[0, :, 0].numpy()
        count = int(words.max())
        batch = {k: np.repeat(v, count + 1, 0) for k, v in encoded.items() if k != "special_tokens_mask"}
        for word in range(1, count + 1):  # row 0 stays whole
            batch["input_ids"][word, words == word] = pad_token_id
        logits = _logits_in_chunks(classifier, batch)[:, target]
        scores.append(logits[0] - logits[1:])
    return scores


def occlude_images(
    classifier: OnnxClassifier, pixel_values: torch.Tensor, targets: list[int], grid_size: int
) -> list[np.ndarray]:
    """Per image, the `[grid_size, grid_size]` drops of `targets[i]`'s logit when each cell is set to 0."""
    cells = grid_cells(*pixel_values.shape[-2:], grid_size).numpy()
    scores = []
    for pixels, target in tqdm(list(zip(pixel_values.numpy(), targets)), desc="Occlusion (ONNX)", leave=False):
        copies = np.repeat(pixels[None], grid_size**2 + 1, 0)
        for cell in range(grid_size**2):
            copies[cell + 1][:, cells == cell] = 0
        logits = _logits_in_chunks(classifier, {"pixel_values": copies})[:, target]
        scores.append((logits[0] - logits[1:]).reshape(grid_size, grid_size))
    return scores


def occlusion_settings(image: bool, grid_size: int | None, teacher: bool) -> dict:
    """How the explanations after export were made, in words, for the results and the card."""
    return {
        "method": "occlusion",
        "baseline": f"each patch-grid cell ({grid_size} x {grid_size} on the student's grid) set to 0 (the mean image)"
        if image
        else "each word's tokens replaced by [PAD] in turn (special tokens and attention mask kept)",
        "score": "the drop of the explained class's logit",
        "target": "the teacher's predicted class, for every model" if teacher else "the PyTorch student's prediction",
        "agreement": "signed scores; Spearman's rho and top-k overlap (top 20% of features) per example, averaged "
        "with bootstrap 95% intervals; `n` = examples compared",
    }


def compare_occlusion(
    graphs: dict[str, OnnxClassifier], student, teacher, examples, targets: list[int], tokenizer=None,
    teacher_tokenizer=None, teacher_examples=None, teacher_targets: list[int] | None = None, max_length: int = 128,
) -> dict:  # fmt: skip
    """Occlusion of `examples` (texts with `tokenizer`, or student pixels) by each ONNX graph, the PyTorch student and
    the teacher (optional; its own pixels `teacher_examples` and class ids `teacher_targets` where they differ),
    compared pairwise: each graph with the PyTorch student and the teacher, and the student with the teacher.

    Text is compared word by word: examples that the teacher's tokenizer splits into other words are left out of its
    pairs (counted in `skipped`). Images are compared cell by cell on the student's patch grid.
    """
    from ..explain.vision import patch_grid_size

    image = tokenizer is None
    grid_size = patch_grid_size(student) if image else None
    if image:
        explained = {"pytorch": explain_images(student, examples, "occlusion", targets, grid_size=grid_size)}
        scores = {"pytorch": [e.grid for e in explained["pytorch"]]}
        for name, graph in graphs.items():
            scores[name] = occlude_images(graph, examples, targets, grid_size)
    else:
        explained = {
            "pytorch": explain_text(student, tokenizer, examples, "occlusion", targets, max_length=max_length)
        }
        scores = {"pytorch": [e.scores for e in explained["pytorch"]]}
        pad = student.config.pad_token_id or 0
        for name, graph in graphs.items():
            scores[name] = occlude_texts(graph, tokenizer, examples, targets, pad, max_length)
    pairs = {f"{name}_vs_pytorch": (scores["pytorch"], scores[name]) for name in graphs}
    skipped = 0
    if teacher is not None:
        teacher_targets = teacher_targets or targets
        if image:
            teacher_pixels = examples if teacher_examples is None else teacher_examples
            found = explain_images(teacher, teacher_pixels, "occlusion", teacher_targets, grid_size=grid_size)
            kept = list(range(len(found)))
            teacher_scores = [e.grid for e in found]
        else:
            found = explain_text(teacher, teacher_tokenizer or tokenizer, examples, "occlusion", teacher_targets,
                                 max_length=max_length)  # fmt: skip
            kept = [i for i, (t, s) in enumerate(zip(found, explained["pytorch"])) if t.words == s.words]
            teacher_scores = [e.scores for e in found]
            skipped = len(examples) - len(kept)
        for name in (*graphs, "pytorch"):
            pairs[f"{name}_vs_teacher"] = ([teacher_scores[i] for i in kept], [scores[name][i] for i in kept])
    return {
        "settings": occlusion_settings(image, grid_size, teacher is not None),
        "num_examples": len(examples),
        "skipped": skipped,
        "agreement": {pair: _agreement(*scores) for pair, scores in pairs.items()},
    }


def _agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> dict | None:
    """`explanation_agreement` over the examples with at least one word or cell (`None` if there are none)."""
    kept = [(r, o) for r, o in zip(reference, other) if np.size(r) > 0]
    return explanation_agreement([r for r, _ in kept], [o for _, o in kept]) if kept else None
