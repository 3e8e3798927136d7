"""`Explanation`: one model's explanation of one prediction, and how it renders (HTML for text, PNG for images)."""

import html
from dataclasses import dataclass, field

import numpy as np


# The one diverging scale of every heatmap kd_hf draws (the card's PNGs, the HTML report, the demo's overlays and word
# highlights): a score scaled to [VMIN, VMAX] goes from purple (away from the explained class) through white (0) to
# red (towards it). These are the colours gradio's `HighlightedText` gives scores, which it cannot be told to change,
# so the figures use them too: the card and its Space read the same.
DIVERGING_CMAP = "kd_hf_purple_red"
NEGATIVE_RGB, POSITIVE_RGB = (128, 90, 213), (239, 68, 60)
VMIN, VMAX = -1.0, 1.0


def diverging_cmap():
    """`DIVERGING_CMAP` as a matplotlib colormap: purple at `VMIN`, white at 0, red at `VMAX`."""
    from matplotlib.colors import LinearSegmentedColormap

    anchors = [np.array(NEGATIVE_RGB) / 255, (1.0, 1.0, 1.0), np.array(POSITIVE_RGB) / 255]
    return LinearSegmentedColormap.from_list(DIVERGING_CMAP, anchors)


def score_rgba(scores: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """Scores in [-1, 1] as `[..., 4]` RGBA in [0, 1]: the scale's end colour for their sign, `opacity * |score|`
    opaque. Over white this is `diverging_cmap()` exactly; over an image it leaves zero-scored pixels untouched."""
    scores = np.clip(np.asarray(scores, dtype=float), VMIN, VMAX)
    rgb = np.where(scores[..., None] >= 0, np.array(POSITIVE_RGB) / 255, np.array(NEGATIVE_RGB) / 255)
    return np.concatenate([rgb, opacity * np.abs(scores)[..., None]], axis=-1)


def completeness_error(total: float, delta: float) -> float:
    """How far attributions summing to `total` are from adding up to the change they explain, `total - delta` (the
    target's f(input) - f(baseline)): `|delta|` relative to that change."""
    return abs(delta) / max(abs(total - delta), np.finfo(np.float32).tiny)


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

    @property
    def completeness_error(self) -> float | None:
        """`|delta|` relative to the change it measures, `|f(input) - f(baseline)|` of the target's logit (which is
        the sum of the scores minus `delta`): how far the attributions are from adding up to that change. `None`
        for methods without a delta."""
        return None if self.delta is None else completeness_error(float(np.sum(self.scores)), self.delta)

    def normalized(self) -> np.ndarray:
        """Scores scaled to [-1, 1] by the largest magnitude (all zeros stay zeros)."""
        scale = np.abs(self.scores).max()
        return self.scores / scale if scale > 0 else self.scores

    def to_html(self) -> str:
        """The words highlighted by their scores on `DIVERGING_CMAP`: red pushes towards the target, purple away."""
        if self.words is None:
            raise ValueError("Only text explanations render to HTML; use `save_png` for images.")
        spans = []
        for word, score in zip(self.words, self.normalized()):
            red, green, blue, alpha = score_rgba(score)
            color = f"rgba({255 * red:.0f}, {255 * green:.0f}, {255 * blue:.0f}, {alpha:.2f})"
            spans.append(
                f'<span title="{score:+.2f}" style="background:{color};padding:1px 2px">{html.escape(word)}</span>'
            )
        header = f"<b>{html.escape(self.label)}</b> ({self.probability:.2f}, {html.escape(self.method)})"
        return f"<div>{header}: {' '.join(spans)}</div>"

    def figure(self, image: np.ndarray | None = None, title: str | None = None):
        """A heatmap of the scores on `DIVERGING_CMAP` with its colour bar: a strip under the words of a text, or a
        map painted over `image` (an `[height, width]` or `[height, width, 3]` array, if given) as the demo does.

        Returns:
            `matplotlib.figure.Figure`: the heatmap's axes, then the colour bar's; close it when done.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        figure, axis = plt.subplots(figsize=(3.6, 3), dpi=100)
        cmap = diverging_cmap()
        if self.words is not None:
            figure.set_size_inches(max(3.6, 0.5 * len(self.words) + 0.6), 1.4)
            axis.imshow(self.normalized()[None, :], cmap=cmap, vmin=VMIN, vmax=VMAX, aspect="auto")
            axis.set_xticks(range(len(self.words)), self.words, rotation=45, ha="right", fontsize=8)
            axis.set_yticks([])
        else:
            if image is not None:
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
                extent = axis.get_xlim() + axis.get_ylim()  # the overlay covers the image whatever its resolution
                axis.imshow(score_rgba(self.normalized(), 0.75), extent=extent)
            else:
                axis.imshow(self.normalized(), cmap=cmap, vmin=VMIN, vmax=VMAX)
            axis.axis("off")
        axis.set_title(title or f"{self.label} ({self.probability:.2f}) · {self.method}", fontsize=9)
        bar = figure.colorbar(ScalarMappable(Normalize(VMIN, VMAX), cmap), ax=axis, fraction=0.05, pad=0.03)
        bar.set_ticks([VMIN, 0, VMAX], labels=["−1 away", "0", "+1 towards"], fontsize=7)
        return figure

    def save_png(self, path: str, image: np.ndarray | None = None, title: str | None = None) -> None:
        """`figure(image, title)` saved as a PNG."""
        import matplotlib.pyplot as plt

        figure = self.figure(image, title)
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
