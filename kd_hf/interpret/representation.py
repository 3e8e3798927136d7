"""Feature-space views: how similar the student's representations are to the teacher's, and what they look like.

- Linear CKA (centred kernel alignment, Kornblith et al. 2019, https://huggingface.co/papers/1905.00414) between
  two models' representations `X` `[n, p]` and `Y` `[n, q]` of the same n examples: with centred columns,
  `CKA = ||YᵀX||²_F / (||XᵀX||_F · ||YᵀY||_F)` (the HSIC form with linear kernels). It is 1 for identical
  representations, invariant to orthogonal transforms and isotropic scaling, and does not need `p = q`.
- The penultimate representation is what the classification head reads: the input of the model's `classifier`
  module, captured with a hook (BERT: the pooled `[CLS]` state; ViT: the layer-normed `[CLS]` state; ResNet: the
  pooled features); a model without a `classifier` module falls back to the first token of the last hidden state
  (`output_hidden_states=True`). Per layer, a text is the mean of its real tokens' states, an image the mean of
  its patch (and `[CLS]`) states, so models with different tokenizers or patch grids are still compared example by
  example. Student layer m is paired with teacher layer m·L_T/L_S (the uniform map of `kd_hf.losses.layers`).
- 2-D projections of the penultimate representations, coloured by label: PCA, and t-SNE (van der Maaten & Hinton,
  2008) when the sample has at least 30 examples; UMAP (McInnes et al. 2018) too where `umap-learn` is installed.

```python
from kd_hf.interpret.representation import linear_cka

linear_cka(teacher_features, student_features)  # 1.0 for identical representations
```
"""

import numpy as np
import torch

from ..losses.layers import layer_pairs


TSNE_MIN_EXAMPLES = 30


def linear_cka(x, y) -> float:
    """Linear CKA of two representations of the same examples (`[n, p]` and `[n, q]`), in [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares representations of the same examples; got {x.shape[0]} and {y.shape[0]}.")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norms = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norms) if norms > 0 else float("nan")


@torch.inference_mode()
def representations(model, batches) -> tuple[np.ndarray, list[np.ndarray]]:
    """The penultimate representation of every example and the mean state of each layer (0 = embeddings).

    Args:
        model (`PreTrainedModel`): a sequence or image classifier.
        batches (iterable of `dict`): the model's inputs (`input_ids` and `attention_mask`, or `pixel_values`).

    Returns:
        `tuple`: `[n, d]` penultimate features, and one `[n, d_l]` array per hidden state.
    """
    device = next(model.parameters()).device
    captured = []
    head = getattr(model, "classifier", None)
    hook = None
    if isinstance(head, torch.nn.Module):
        hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    penultimate, layers = [], None
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(**batch, output_hidden_states=True)
            states = outputs.hidden_states or ()
            if hook is not None and captured:
                features = captured.pop()
                features = features[:, 0] if features.dim() == 3 else features.flatten(1)  # RoBERTa-style heads
            else:
                features = states[-1][:, 0] if states[-1].dim() == 3 else states[-1].mean((2, 3))
            captured.clear()
            penultimate.append(features.float().cpu())
            pooled = [_mean_state(state, batch.get("attention_mask")) for state in states]
            layers = [[p] for p in pooled] if layers is None else [a + [p] for a, p in zip(layers, pooled)]
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(penultimate).numpy(), [torch.cat(layer).numpy() for layer in layers or []]


def _mean_state(state: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if state.dim() == 4:  # a CNN's feature map [batch, channels, height, width]
        return state.float().mean((2, 3)).cpu()
    if mask is None:
        return state.float().mean(1).cpu()
    mask = mask[:, :, None].to(state.dtype)
    return ((state * mask).sum(1) / mask.sum(1).clamp_min(1)).float().cpu()


def mapped_layers(num_student: int, num_teacher: int) -> list[tuple[int, int]]:
    """The uniform layer map (student layer m <-> teacher layer m·L_T/L_S), rounded when L_T is no multiple of L_S."""
    try:
        return layer_pairs(num_student, num_teacher, "uniform")
    except ValueError:
        return [(m, max(1, round(m * num_teacher / num_student))) for m in range(1, num_student + 1)]


def layer_cka(teacher_layers: list[np.ndarray], student_layers: list[np.ndarray]) -> dict:
    """CKA per mapped layer pair, and the whole `[student layer, teacher layer]` matrix (0 = embeddings)."""
    matrix = [[linear_cka(t, s) for t in teacher_layers] for s in student_layers]
    pairs = mapped_layers(len(student_layers) - 1, len(teacher_layers) - 1) if len(student_layers) > 1 else []
    return {
        "layers": [{"student_layer": s, "teacher_layer": t, "cka": matrix[s][t]} for s, t in pairs],
        "cka_matrix": matrix,
    }


def projections(features: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D views of `[n, d]` features: PCA always, t-SNE from 30 examples, UMAP where installed."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(features)
    views = {"PCA": PCA(n_components=2, random_state=seed).fit_transform(features)}
    if n >= TSNE_MIN_EXAMPLES:
        perplexity = min(30.0, (n - 1) / 3)
        views["t-SNE"] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
        try:
            import umap
        except ImportError:
            pass
        else:
            views["UMAP"] = umap.UMAP(random_state=seed).fit_transform(features)
    return views


def plot_projections(views: dict[str, dict], labels: np.ndarray, label_names: list[str], path: str) -> None:
    """One row per projection, teacher and student side by side, examples coloured by their true label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(views["teacher"])
    figure, axes = plt.subplots(len(methods), 2, figsize=(8, 3.6 * len(methods)), dpi=100, squeeze=False)
    colours = plt.get_cmap("tab10")
    for row, method in zip(axes, methods):
        for axis, role in zip(row, ("teacher", "student")):
            points = views[role][method]
            for c, name in enumerate(label_names):
                chosen = labels == c
                axis.scatter(*points[chosen].T, s=8, color=colours(c % 10), label=name, alpha=0.8)
            axis.set_title(f"{role}: {method} of the penultimate representation", fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 1].legend(fontsize=7, markerscale=1.5, loc="best")
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def plot_cka(matrix: list[list[float]], pairs: list[dict], path: str) -> None:
    """The CKA of every student layer (rows) with every teacher layer (columns); mapped pairs outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    figure, axis = plt.subplots(figsize=(1 + 0.6 * values.shape[1], 1 + 0.6 * values.shape[0]), dpi=100)
    axis.imshow(values, cmap="viridis", vmin=0, vmax=1)
    for (s, t), value in np.ndenumerate(values):
        axis.text(t, s, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "k")
    for pair in pairs:
        s, t = pair["student_layer"], pair["teacher_layer"]
        axis.add_patch(plt.Rectangle((t - 0.5, s - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    axis.set_xlabel("teacher layer (0 = embeddings)")
    axis.set_ylabel("student layer")
    axis.set_xticks(range(values.shape[1]))
    axis.set_yticks(range(values.shape[0]))
    axis.set_title("linear CKA (red: mapped layers)", fontsize=9)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
