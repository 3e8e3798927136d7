"""How many model evaluations integrated gradients needs for a given accuracy, rule by rule (issue 19).

Issue 19 asks for integrated gradients 2x faster than captum's per-example loop at no larger completeness error. On
CPU every method already runs near the core's matrix-product peak (`benchmarks/explain_throughput.py`), so the only
way to 2x is half the evaluations of the model for the same accuracy. This script measures that frontier for the
quadrature rules one could use, on the same inputs, against a reference integral of 256 Gauss-Legendre points:

- `gauss_legendre` (captum's default rule) and `riemann_trapezoid` (captum's, nodes at both ends of the path);
- `... + completeness`: the same rule with its attributions rescaled so that they add up to f(input) - f(baseline);
- `trapezoid + completeness per interval`: f is known at every node (the forward pass of each gradient), so the
  exact integral of the *sum* of the attributions over each interval is f(next node) - f(node). Each interval's
  shortfall is shared among the features by the size of their trapezoid terms;
- `panels k x m + completeness per panel`: k Gauss-Legendre panels of m points, f at the panel edges from
  forward-only passes (about a third of a gradient evaluation each), the shortfall shared likewise.

The completeness rules are complete by construction (their completeness error is 0 up to float32), so completeness
cannot judge them; the error against the reference can. Per input: **reference error** = sum |a - a_ref| / sum
|a_ref| over the token (text) or pixel (image) scores, the **completeness error** |sum a - (f(x) - f(b))| /
|f(x) - f(b)|, and **Spearman rho** against 64 Gauss-Legendre points (the goal's >= 0.99). Cost is counted in model
evaluations: gradient evaluations (forward and backward) and forward-only ones.

Text: the fine-tuned MiniLM teacher on Rotten Tomatoes validation snippets, baseline `[CLS] [PAD] ... [SEP]`, scores
per token at the embedding output. Images: the MNIST ViT teacher on test digits, all-zero baseline, scores per pixel.
Each input is explained for the model's predicted class.

    python benchmarks/ig_quadrature.py                       # text and images, 40 inputs each (~10 min, 1 thread)

Results go to `benchmarks/results/ig_quadrature.json`.
"""

import argparse
import json
import os
from collections.abc import Callable

import numpy as np
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from kd_hf.data import load_offline_dataset
from kd_hf.explain.explanation import completeness_error
from kd_hf.models import load_model, load_processor


REFERENCE_POINTS = 256


def gauss_legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    """captum's Gauss-Legendre nodes and weights on [0, 1]."""
    weights, nodes = approximation_parameters("gausslegendre")
    return np.asarray(nodes(points)), np.asarray(weights(points))


class Path:
    """The straight path from a baseline to an input of one model, evaluated at any points along it.

    `gradients(alphas)` returns f at each point (the target's logit) and the per-feature integrand at each point,
    `[points, features]`: the gradient at the point times (input - baseline), summed over the hidden dimension of a
    token (text) or the channels of a pixel (images); `values(alphas)` returns f alone, without a backward pass.
    """

    def __init__(self, actual: torch.Tensor, baseline: torch.Tensor, run: Callable, target: int):
        self.actual, self.baseline, self.run, self.target = actual, baseline, run, target
        self.reduce = (lambda g: g.sum(-1).flatten(1)) if actual.dim() == 3 else (lambda g: g.sum(1).flatten(1))

    def _points(self, alphas) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.actual.dim() - 1)
        scale = torch.as_tensor(np.asarray(alphas), dtype=self.actual.dtype).view(shape)
        return self.baseline + scale * (self.actual - self.baseline)

    def gradients(self, alphas) -> tuple[np.ndarray, np.ndarray]:
        points = self._points(alphas).requires_grad_(True)
        values = self.run(points)[:, self.target]
        (gradient,) = torch.autograd.grad(values.sum(), points)
        integrand = self.reduce(gradient * (self.actual - self.baseline))
        return values.detach().double().numpy(), integrand.double().numpy()

    def values(self, alphas) -> np.ndarray:
        with torch.no_grad():
            return self.run(self._points(alphas))[:, self.target].double().numpy()


def share(terms: np.ndarray, shortfall: np.ndarray) -> np.ndarray:
    """`terms` `[intervals, features]` plus each interval's `shortfall`, shared by the terms' magnitudes (equally
    where every term is zero)."""
    magnitude = np.abs(terms)
    magnitude[magnitude.sum(1) == 0] = 1.0
    return terms + shortfall[:, None] * magnitude / magnitude.sum(1, keepdims=True)


def rule_gauss_legendre(path: Path, points: int, complete: bool, change: float):
    """captum's rule; with `complete`, its scores rescaled to add up to `change`, f(input) - f(baseline)."""
    nodes, weights = gauss_legendre(points)
    _, integrand = path.gradients(nodes)
    scores = (weights[:, None] * integrand).sum(0)
    if complete:
        scores = scores * change / scores.sum()
    return scores, (points, 2)  # the delta's f(input) and f(baseline): two forward passes


def rule_trapezoid(path: Path, intervals: int, complete: bool):
    """The trapezoid rule on `intervals` equal intervals; with `complete`, each interval's terms made to add up to
    the change of f across it."""
    nodes = np.linspace(0.0, 1.0, intervals + 1)
    values, integrand = path.gradients(nodes)
    terms = (integrand[:-1] + integrand[1:]) / (2 * intervals)
    if complete:
        terms = share(terms, np.diff(values) - terms.sum(1))
    return terms.sum(0), (intervals + 1, 0)


def rule_panels(path: Path, panels: int, points: int):
    """Gauss-Legendre on each of `panels` equal panels, the terms of each made to add up to the change of f across
    it (f at the panel edges from forward passes alone)."""
    edges = np.linspace(0.0, 1.0, panels + 1)
    edge_values = path.values(edges)
    nodes, weights = gauss_legendre(points)
    terms = []
    for start, end in zip(edges[:-1], edges[1:]):
        _, integrand = path.gradients(start + (end - start) * nodes)
        terms.append(((end - start) * weights[:, None] * integrand).sum(0))
    terms = np.stack(terms)
    return share(terms, np.diff(edge_values) - terms.sum(1)).sum(0), (panels * points, panels + 1)


def rules(cli) -> dict[str, Callable]:
    table = {}
    for points in cli.gauss_legendre:
        table[f"gauss_legendre {points}"] = lambda path, change, n=points: rule_gauss_legendre(path, n, False, change)
    for points in cli.complete_gauss_legendre:
        table[f"gauss_legendre {points} + completeness"] = lambda path, change, n=points: rule_gauss_legendre(
            path, n, True, change
        )
    for intervals in cli.trapezoid:
        table[f"riemann_trapezoid {intervals + 1}"] = lambda path, change, n=intervals: rule_trapezoid(path, n, False)
        table[f"trapezoid {intervals + 1} + completeness per interval"] = lambda path, change, n=intervals: (
            rule_trapezoid(path, n, True)
        )
    for panels, points in (map(int, spec.split("x")) for spec in cli.panels):
        table[f"panels {panels} x {points} + completeness per panel"] = lambda path, change, k=panels, m=points: (
            rule_panels(path, k, m)
        )
    return table


def text_path(model, tokenizer, text: str, max_length: int) -> Path:
    """The path of one text from `[CLS] [PAD] ... [SEP]` at the embedding output, for the model's predicted class."""
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt",
                        return_special_tokens_mask=True)  # fmt: skip
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    baseline_ids = torch.where(encoded["special_tokens_mask"].bool(), ids, model.config.pad_token_id or 0)
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        actual, baseline = embeddings(ids), embeddings(baseline_ids)
        target = int(model(input_ids=ids, attention_mask=mask).logits.argmax())

    def run(points):
        return model(inputs_embeds=points, attention_mask=mask.expand(len(points), -1)).logits

    return Path(actual, baseline, run, target)


def image_path(model, image: torch.Tensor) -> Path:
    """The path of one image `[channels, height, width]` from all zeros, for the model's predicted class."""

    def run(points):
        return model(pixel_values=points).logits

    with torch.no_grad():
        target = int(run(image[None]).argmax())
    return Path(image[None], torch.zeros_like(image[None]), run, target)


def text_paths(cli):
    model = load_model(cli.text_model).eval().requires_grad_(False)
    tokenizer = load_processor(cli.text_model)
    texts = load_offline_dataset("rotten_tomatoes")["validation"]["text"][cli.offset : cli.offset + cli.num_examples]
    return (text_path(model, tokenizer, text, cli.max_length) for text in texts)


def image_paths(cli):
    from kd_hf.data.vision import preprocess_images

    model = load_model(cli.image_model, image=True).eval().requires_grad_(False)
    processor = load_processor(cli.image_model, image=True)
    sample = load_offline_dataset("mnist")["test"].shuffle(seed=1).select(range(cli.num_examples))
    pixels = preprocess_images(sample, processor, image_column="image", label_column="label",
                               num_channels=model.config.num_channels)[:]["pixel_values"]  # fmt: skip
    return (image_path(model, image) for image in pixels)


def measure(paths, count: int, table: dict[str, Callable], description: str) -> list[dict]:
    errors = {name: [] for name in table}
    costs = {}
    for path in tqdm(paths, total=count, desc=description):
        ends = path.values([0.0, 1.0])
        change = ends[1] - ends[0]
        reference = rule_gauss_legendre(path, REFERENCE_POINTS, False, change)[0]
        sixty_four = rule_gauss_legendre(path, 64, False, change)[0]
        for name, rule in table.items():
            scores, costs[name] = rule(path, change)
            errors[name].append((
                np.abs(scores - reference).sum() / np.abs(reference).sum(),
                completeness_error(scores.sum(), scores.sum() - change),
                spearmanr(scores, sixty_four)[0],
            ))  # fmt: skip
    rows = []
    for name, values in errors.items():
        values = np.asarray(values)
        rows.append({
            "rule": name, "gradient_evaluations": costs[name][0], "forward_evaluations": costs[name][1],
            "reference_error_mean": float(values[:, 0].mean()), "reference_error_median": float(np.median(values[:, 0])),
            "reference_error_max": float(values[:, 0].max()),
            "completeness_error_mean": float(values[:, 1].mean()),
            "completeness_error_median": float(np.median(values[:, 1])),
            "spearman_vs_64_mean": float(np.nanmean(values[:, 2])), "spearman_vs_64_min": float(np.nanmin(values[:, 2])),
        })  # fmt: skip
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| rule | gradient evaluations (+ forward only) | error vs 256 points, mean (median; max) "
          "| completeness error, mean (median) | ρ vs 64 points, mean (min) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['rule']} | {row['gradient_evaluations']} (+ {row['forward_evaluations']}) | "
            f"{row['reference_error_mean']:.4f} ({row['reference_error_median']:.4f}; {row['reference_error_max']:.4f}) | "
            f"{row['completeness_error_mean']:.4f} ({row['completeness_error_median']:.4f}) | "
            f"{row['spearman_vs_64_mean']:.4f} ({row['spearman_vs_64_min']:.4f}) |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text_model", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--image_model", default="outputs/vit-mnist")
    parser.add_argument("--modalities", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument("--num_examples", type=int, default=40)
    parser.add_argument("--offset", type=int, default=300, help="first validation snippet (text)")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--gauss_legendre", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    parser.add_argument("--complete_gauss_legendre", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--trapezoid", type=int, nargs="+", default=[15, 23, 31], help="intervals (nodes - 1)")
    parser.add_argument("--panels", nargs="+", default=["2x8", "4x4", "4x6"], help="panels x points")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default="benchmarks/results/ig_quadrature.json")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    table = rules(cli)
    tables = {}
    if "text" in cli.modalities:
        tables["text"] = measure(text_paths(cli), cli.num_examples, table, "text")
    if "image" in cli.modalities:
        tables["image"] = measure(image_paths(cli), cli.num_examples, table, "images")
    meta = {"num_examples": cli.num_examples, "text_offset": cli.offset, "reference_points": REFERENCE_POINTS}
    os.makedirs(os.path.dirname(cli.output), exist_ok=True)
    with open(cli.output, "w") as file:
        json.dump({"meta": meta, **tables}, file, indent=2)
    for modality, rows in tables.items():
        model = cli.text_model if modality == "text" else cli.image_model
        print_table(f"Integrated gradients by rule, {modality}: {model}, {cli.num_examples} inputs", rows)


if __name__ == "__main__":
    main()
