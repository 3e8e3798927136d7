"""Global feature importance: per-example attributions aggregated over a sample into what pushes each class.

For every class c, over the examples whose explained class is c (each model explains its own prediction), the
signed scores of a feature are summed and divided by the number of those examples: the feature's mean contribution
per example of class c (a feature absent from an example contributes 0 to it, as in the global mean of SHAP values,
Lundberg & Lee 2017, https://huggingface.co/papers/1705.07874; and Lundberg et al. 2020, "From local explanations to
global understanding"). Text features are lower-cased words (`Explanation.words`, so models with different
tokenizers are compared word for word; punctuation is left out); image features are the cells of the patch grid
(`Explanation.grid`).

```python
from kd_hf.interpret.importance import top_k_overlap, word_importance

importance = word_importance(explanations, ["negative", "positive"])
importance["positive"][0]  # {"word": "wonderful", "score": 0.41, "sum": 12.3, "count": 31}
```
"""

from collections import defaultdict

import numpy as np

from ..explain.explanation import NEGATIVE_RGB, POSITIVE_RGB, diverging_cmap
from ..report.numbers import percent


def word_importance(explanations, label_names: list[str]) -> dict[str, list[dict]]:
    """Words ranked by their mean signed score per example of each explained class (highest first).

    Args:
        explanations (`list[Explanation]`): text explanations (`words`, `scores`, `target`).
        label_names (`list[str]`): class names by id; classes that no example was explained as get an empty list.

    Returns:
        `dict`: class name -> `[{"word", "score", "sum", "count"}, ...]`, where `sum` adds the word's scores over the
        class's examples, `count` is how often it occurs in them, and `score = sum / (examples of the class)`; ties
        are broken alphabetically.
    """
    sums = [defaultdict(float) for _ in label_names]
    counts = [defaultdict(int) for _ in label_names]
    examples = np.zeros(len(label_names), dtype=int)
    for explanation in explanations:
        examples[explanation.target] += 1
        for word, score in zip(explanation.words, explanation.scores):
            if not any(character.isalnum() for character in word):
                continue  # punctuation: every token earns a share of IG's logit against [PAD]; these are no words
            sums[explanation.target][word.lower()] += float(score)
            counts[explanation.target][word.lower()] += 1
    ranked = {}
    for c, name in enumerate(label_names):
        rows = [
            {"word": word, "score": total / examples[c], "sum": total, "count": counts[c][word]}
            for word, total in sums[c].items()
        ]
        ranked[name] = sorted(rows, key=lambda row: (-row["score"], row["word"]))
    return ranked


def grid_importance(explanations, label_names: list[str]) -> dict[str, np.ndarray | None]:
    """The mean patch grid of each explained class (`None` for a class no example was explained as)."""
    grids = defaultdict(list)
    for explanation in explanations:
        grids[explanation.target].append(explanation.grid)
    return {name: np.mean(grids[c], 0) if grids[c] else None for c, name in enumerate(label_names)}


def top_cells(grid: np.ndarray | None, k: int) -> list[dict]:
    """The `k` cells of a mean grid with the highest signed score, as `{"cell": [row, column], "score"}`."""
    if grid is None:
        return []
    order = np.argsort(-grid.ravel(), kind="stable")[:k]
    return [{"cell": list(np.unravel_index(i, grid.shape)), "score": float(grid.ravel()[i])} for i in order]


def top_k_overlap(a: list, b: list, k: int) -> float | None:
    """`|top_k(a) & top_k(b)| / k` for two rankings (best first: words, cells, or rows of `word_importance` /
    `top_cells`), k shrunk to the shorter ranking; `None` when either is empty."""
    if not a or not b:
        return None
    k = min(k, len(a), len(b))
    return len(set(map(_key, a[:k])) & set(map(_key, b[:k]))) / k


def _key(row):
    """What identifies a ranked feature: a word, a grid cell, or the item itself."""
    if not isinstance(row, dict):
        return row
    return tuple(row["cell"]) if "cell" in row else row["word"]


def class_importance(teacher: dict, student: dict, label_names: list[str], k: int = 10, image: bool = False) -> dict:
    """Both models' top-k features per class and their overlap, from `word_importance` (text: with the k words that
    push away from the class most) or `grid_importance` (images: with the mean grids)."""
    classes = {}
    for name in label_names:
        if not image:
            t, s = teacher[name][:k], student[name][:k]
            bottom = {"teacher_bottom": teacher[name][::-1][:k], "student_bottom": student[name][::-1][:k]}
        else:
            t, s = top_cells(teacher[name], k), top_cells(student[name], k)
            bottom = {
                "teacher_grid": None if teacher[name] is None else teacher[name].tolist(),
                "student_grid": None if student[name] is None else student[name].tolist(),
            }
        classes[name] = {"teacher": t, "student": s, "overlap": top_k_overlap(t, s, k), **bottom}
    overlaps = [c["overlap"] for c in classes.values() if c["overlap"] is not None]
    return {"top_k": k, "classes": classes, "mean_overlap": float(np.mean(overlaps)) if overlaps else None}


def plot_word_importance(importance: dict, path: str, k: int = 10) -> None:
    """One row per class, teacher and student side by side: the k words that push the class most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = importance["classes"]
    figure, axes = plt.subplots(len(classes), 2, figsize=(8, 0.3 * k * len(classes) + 1), dpi=100, squeeze=False)
    for row, (name, both) in zip(axes, classes.items()):
        for axis, role in zip(row, ("teacher", "student")):
            words = both[role][:k][::-1]
            scores = [w["score"] for w in words]
            colours = [_rgb(POSITIVE_RGB if score >= 0 else NEGATIVE_RGB) for score in scores]  # the card's scale
            axis.barh([w["word"] for w in words], scores, color=colours)
            if not words:
                axis.text(0.5, 0.5, "no example predicted as this class", ha="center", transform=axis.transAxes)
            axis.axvline(0, color="black", linewidth=0.5)
            axis.set_title(f"{role}: pushes to {name!r} (top-{k} overlap {percent(both['overlap'])})", fontsize=9)
            axis.tick_params(labelsize=8)
        row[0].set_xlabel("mean score per example of the class")
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def plot_grid_importance(importance: dict, images: dict, path: str) -> None:
    """One column per class, the teacher's mean map above the student's, over the class's mean input image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = importance["classes"]
    figure, axes = plt.subplots(2, len(classes), figsize=(1.6 * len(classes), 3.6), dpi=100, squeeze=False)
    for column, (name, both) in enumerate(classes.items()):
        for row, role in enumerate(("teacher", "student")):
            axis = axes[row, column]
            axis.axis("off")
            grid = both[f"{role}_grid"]
            if grid is None:
                axis.set_title(f"{role} {name}\n(never predicted)", fontsize=8)
                continue
            grid = np.asarray(grid)
            image = images.get(name)
            extent = (0, grid.shape[1], grid.shape[0], 0)
            if image is not None:
                axis.imshow(image, cmap="gray", extent=extent)
            scale = np.abs(grid).max() or 1.0
            axis.imshow(grid, cmap=diverging_cmap(), vmin=-scale, vmax=scale, alpha=0.6, extent=extent)
            axis.set_title(f"{role} {name}" + (f"\n{percent(both['overlap'])}" if row == 0 else ""), fontsize=8)
    figure.suptitle(
        "mean attribution per class (red pushes to the class, purple away; overlap = top-k cells shared)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(channel / 255 for channel in colour)
