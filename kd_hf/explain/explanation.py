"""`Explanation`: one model's explanation of one prediction, and how it renders (HTML for text, PNG for images)."""

import html
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Explanation:
    """What a model attributed its prediction to.

    Attributes:
        method (`str`): e.g. `integrated_gradients`, `saliency`, `input_x_gradient`, `attention_rollout`, `grad_cam`.
        target (`int`): the explained class id.
        label (`str`): its name.
        probability (`float`): the model's probability of `target`.
        scores (`np.ndarray`): one score per word (text, aligned with `words`) or per pixel (`[height, width]`).
        words (`list[str]`, *optional*): the words of a text, sub-word scores summed into them.
        grid (`np.ndarray`, *optional*): image scores mean-pooled into a patch grid, to compare models whose maps
            differ in resolution.
        delta (`float`, *optional*): integrated gradients' convergence delta (sum of attributions minus the change of
            the target's logit from baseline to input); small means the integral was approximated well.
        settings (`dict`): how it was made (baseline, steps, ...), for reports and cards.
    """

    method: str
    target: int
    label: str
    probability: float
    scores: np.ndarray
    words: list[str] | None = None
    grid: np.ndarray | None = None
    delta: float | None = None
    settings: dict = field(default_factory=dict)

    def normalized(self) -> np.ndarray:
        """Scores scaled to [-1, 1] by the largest magnitude (all zeros stay zeros)."""
        scale = np.abs(self.scores).max()
        return self.scores / scale if scale > 0 else self.scores

    def to_html(self) -> str:
        """The words highlighted by their scores: green pushes towards the target, red away from it."""
        if self.words is None:
            raise ValueError("Only text explanations render to HTML; use `save_png` for images.")
        spans = []
        for word, score in zip(self.words, self.normalized()):
            color = f"rgba(0, 160, 0, {score:.2f})" if score >= 0 else f"rgba(200, 0, 0, {-score:.2f})"
            spans.append(
                f'<span title="{score:+.2f}" style="background:{color};padding:1px 2px">{html.escape(word)}</span>'
            )
        header = f"<b>{html.escape(self.label)}</b> ({self.probability:.2f}, {html.escape(self.method)})"
        return f"<div>{header}: {' '.join(spans)}</div>"

    def save_png(self, path: str, image: np.ndarray | None = None, title: str | None = None) -> None:
        """A heatmap of the scores (over `image`, an `[height, width]` or `[height, width, 3]` array, if given)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(3, 3), dpi=100)
        if self.words is not None:
            figure.set_size_inches(max(3, 0.5 * len(self.words)), 1.2)
            axis.imshow(self.normalized()[None, :], cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
            axis.set_xticks(range(len(self.words)), self.words, rotation=45, ha="right", fontsize=8)
            axis.set_yticks([])
        else:
            if image is not None:
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
            axis.imshow(self.normalized(), cmap="bwr", vmin=-1, vmax=1, alpha=0.6 if image is not None else 1.0)
            axis.axis("off")
        axis.set_title(title or f"{self.label} ({self.probability:.2f}) · {self.method}", fontsize=9)
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
