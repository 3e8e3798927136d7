"""Robustness of explanations: how much a model's attributions and predictions move under small perturbations.

- Max-sensitivity (Yeh et al. 2019, https://huggingface.co/papers/1901.09392), captum's `sensitivity_max`: the
  largest relative change `||a(x + δ) − a(x)|| / ||a(x)||` of the explanation (any registered explainer) over random δ drawn uniformly from an
  L∞ ball whose radius is `radius` times the standard deviation of the inputs (the word embeddings of the real words
  of a text, special tokens and padding untouched; or the pixels). Lower is more robust; a constant model scores 0.
  Explanations that move under imperceptible changes are fragile (Ghorbani et al. 2019, "Interpretation of neural
  networks is fragile", https://huggingface.co/papers/1710.10547).
- Text, synonym-free: drop each text's lowest-|score| word (by the model's own explanation) and explain again, for
  the same class: Spearman ρ between the remaining words' scores before and after, and how often the prediction
  flips.
- Images: small Gaussian noise, and one FGSM step against the model's own prediction (Goodfellow et al. 2015,
  https://huggingface.co/papers/1412.6572): the same two figures, on the patch grid.
"""

import dataclasses

import numpy as np
import torch
from scipy.stats import spearmanr

from ..explain import explain_images, explain_text, get_explainer
from ..explain.inputs import image_inputs, text_inputs
from ..explain.vision import patch_grid_size
from ..metrics.explanation import bootstrap_interval


def summarize(values, seed: int = 0) -> dict:
    """Mean of `values` (NaNs dropped) with its bootstrap 95% interval and count."""
    mean, low, high = bootstrap_interval(values, seed=seed)
    return {"mean": mean, "low": low, "high": high, "n": int(sum(not np.isnan(v) for v in values))}


def _rank_correlation(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def sensitivity(
    model,
    inputs: dict,
    targets,
    method: str = "integrated_gradients",
    n_steps: int = 16,
    radius: float = 0.05,
    n_perturb_samples: int = 5,
    special_tokens_mask: torch.Tensor | None = None,
    encodings=None,
    grid_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """captum's `sensitivity_max` of a model's explanations of `targets` on one batch of `inputs`, per example.

    Args:
        model (`PreTrainedModel`): a text or image classifier.
        inputs (`dict`): `input_ids` and `attention_mask` (text), or `pixel_values`.
        targets (`list[int]`): the explained class per example.
        method (`str`, *optional*, defaults to `"integrated_gradients"`): any explainer of
            `kd_hf.explain.registry` for the modality, on the word embeddings or the pixels.
        radius (`float`): the L∞ radius of the perturbations, in standard deviations of the inputs.
        special_tokens_mask (`torch.Tensor`, *optional*): text tokens never perturbed (besides padding).
        encodings (*optional*): the tokenizer's encodings of a text batch: the words that occlusion replaces together.
        grid_size (`int`, *optional*): the patch grid whose cells occlusion replaces; defaults to the model's.
    """
    from captum.metrics import sensitivity_max

    modality = "image" if "pixel_values" in inputs else "text"
    function = getattr(get_explainer(method, modality), modality)
    device = next(model.parameters()).device
    target = torch.as_tensor(targets, device=device)
    # rows per forward pass of integrated gradients and occlusion: the batch with all its perturbations at once
    options = {"n_steps": n_steps, "internal_batch_size": max(256, len(target) * n_perturb_samples)}
    if modality == "image":
        pixels = inputs["pixel_values"].to(device).float()
        explained = image_inputs(model, pixels, grid_size or patch_grid_size(model), **options)
        free = torch.ones_like(explained.values)
    else:
        batch = {name: value.to(device) for name, value in inputs.items()}
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        special = special_tokens_mask.to(device).bool() if special_tokens_mask is not None else torch.zeros_like(mask)
        explained = text_inputs(model, batch, special, encodings, **options)
        free = (mask.bool() & ~special.bool())[..., None].to(explained.values.dtype).expand_as(explained.values)
    attributed = explained.values.detach()
    scale = float(attributed[free.bool()].std()) if free.any() else 0.0

    def explain(values, target):  # captum passes a tuple, and wants one back
        values = (values[0] if isinstance(values, tuple) else values).detach().requires_grad_(True)
        repeated = explained.repeat(len(values) // len(attributed))
        return (function(dataclasses.replace(repeated, values=values), target)[0],)

    def perturb(values, perturb_radius):
        values = values[0] if isinstance(values, tuple) else values
        repeats = values.shape[0] // free.shape[0]
        noise = torch.empty_like(values).uniform_(-perturb_radius, perturb_radius)
        return values + noise * free.repeat_interleave(repeats, 0)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # seeded, without side effects
        torch.manual_seed(seed)
        scores = sensitivity_max(
            explain, attributed, perturb_func=perturb, perturb_radius=radius * scale,
            n_perturb_samples=n_perturb_samples, target=target,
        )  # fmt: skip
    return scores.detach().float().cpu().numpy()


def text_batches(tokenizer, texts, batch_size: int, max_length: int, **tokenizer_kwargs):
    """`(start, encoded)` for each batch of `texts`, padded and truncated to `max_length` tokens."""
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoded = tokenizer(
            chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt", **tokenizer_kwargs
        )
        yield start, encoded


def text_sensitivity(model, tokenizer, texts, targets, batch_size: int = 8, max_length: int = 128, **options):
    """`sensitivity` over texts, batch by batch."""
    values = []
    for start, encoded in text_batches(tokenizer, texts, batch_size, max_length, return_special_tokens_mask=True):
        special = encoded.pop("special_tokens_mask")
        chunk = targets[start : start + batch_size]
        values.extend(
            sensitivity(
                model, dict(encoded), chunk, special_tokens_mask=special, encodings=encoded.encodings, **options
            )
        )
    return values


def image_sensitivity(model, pixels, targets, batch_size: int = 16, **options):
    """`sensitivity` over a pixel tensor, batch by batch."""
    values = []
    for start in range(0, len(pixels), batch_size):
        chunk = {"pixel_values": pixels[start : start + batch_size]}
        values.extend(sensitivity(model, chunk, targets[start : start + batch_size], **options))
    return values


def _word_spans(tokenizer, text: str, max_length: int) -> list[tuple[int, int]]:
    """Character spans of the words that `kd_hf.explain.merge_words` returns, in the same order."""
    encoding = tokenizer(text, truncation=True, max_length=max_length)[0]
    spans, seen = [], set()
    for position, word_id in enumerate(encoding.word_ids):
        if word_id is None or encoding.sequence_ids[position] != 0 or word_id in seen:
            continue
        seen.add(word_id)
        spans.append(encoding.word_to_chars(word_id, sequence_index=0))
    return spans


@torch.inference_mode()
def predict_texts(model, tokenizer, texts, batch_size: int = 32, max_length: int = 128) -> np.ndarray:
    """Class probabilities of `texts`: `[n, classes]`."""
    device = next(model.parameters()).device
    out = []
    for _, encoded in text_batches(tokenizer, texts, batch_size, max_length):
        out.append(model(**encoded.to(device)).logits.float().softmax(-1).cpu())
    return torch.cat(out).numpy()


def drop_word(model, tokenizer, texts, explanations, method="integrated_gradients", n_steps=16, max_length=128):
    """Drop each text's least important word; compare the explanation and prediction before and after.

    Returns:
        `dict`: `spearman` (remaining words' scores, before vs after), `flip_rate`, `probability_change`
        (|Δ p(explained class)|), `n`, and `skipped` (texts of one word, or whose words split differently after).
    """
    dropped, kept, chosen = [], [], []
    for i, (text, explanation) in enumerate(zip(texts, explanations)):
        spans = _word_spans(tokenizer, text, max_length)
        if len(explanation.words) < 2 or len(spans) != len(explanation.words):
            continue
        j = int(np.argmin(np.abs(explanation.scores)))
        start, end = spans[j]
        dropped.append(" ".join((text[:start] + " " + text[end:]).split()))
        kept.append(j)
        chosen.append(i)
    if not chosen:
        return {
            "spearman": summarize([]),
            "flip_rate": None,
            "probability_change": summarize([]),
            "n": 0,
            "skipped": len(texts),
        }
    before = [explanations[i] for i in chosen]
    after = explain_text(
        model, tokenizer, dropped, method, [e.target for e in before], n_steps=n_steps, max_length=max_length
    )
    predicted = predict_texts(model, tokenizer, dropped, max_length=max_length).argmax(-1)
    rhos, flips, changes = [], [], []
    for b, a, j, p in zip(before, after, kept, predicted):
        flips.append(float(p != b.target))
        changes.append(abs(a.probability - b.probability))
        remaining = [w for k, w in enumerate(b.words) if k != j]
        rhos.append(_rank_correlation(np.delete(b.scores, j), a.scores) if remaining == a.words else float("nan"))
    return {
        "spearman": summarize(rhos),
        "flip_rate": float(np.mean(flips)),
        "probability_change": summarize(changes),
        "n": len(chosen),
        "skipped": len(texts) - len(chosen) + int(np.isnan(rhos).sum()),
    }


def fgsm(model, pixels: torch.Tensor, targets, epsilon: float) -> torch.Tensor:
    """One FGSM step: `x + ε · sign(∇ₓ CE(f(x), target))`, away from each image's `targets`."""
    device = next(model.parameters()).device
    values = pixels.detach().to(device).requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(
            model(pixel_values=values).logits, torch.as_tensor(targets, device=device)
        )
        (gradient,) = torch.autograd.grad(loss, values)
    return (values + epsilon * gradient.sign()).detach().cpu()


def image_perturbations(
    model,
    pixels,
    explanations,
    method="integrated_gradients",
    n_steps=16,
    noise=0.1,
    epsilon=0.05,
    grid_size=None,
    seed=0,
) -> dict:
    """Gaussian noise (σ = `noise` std of the pixels) and one FGSM step (ε = `epsilon` std of the pixels): for each,
    Spearman ρ between the patch grids before and after (same class), flip rate and |Δ p|."""
    scale = float(pixels.float().std())
    targets = [e.target for e in explanations]
    generator = torch.Generator().manual_seed(seed)
    perturbed = {
        "noise": pixels + noise * scale * torch.randn(pixels.shape, generator=generator),
        "fgsm": fgsm(model, pixels, targets, epsilon * scale),
    }
    results = {}
    for name, values in perturbed.items():
        after = explain_images(model, values, method, targets, n_steps, grid_size=grid_size)
        with torch.inference_mode():
            device = next(model.parameters()).device
            predicted = torch.cat(
                [
                    model(pixel_values=values[i : i + 64].to(device)).logits.argmax(-1).cpu()
                    for i in range(0, len(values), 64)
                ]
            )
        results[name] = {
            "spearman": summarize([_rank_correlation(b.grid, a.grid) for b, a in zip(explanations, after)]),
            "flip_rate": float((predicted.numpy() != np.asarray(targets)).mean()),
            "probability_change": summarize([abs(a.probability - b.probability) for b, a in zip(explanations, after)]),
            "n": len(targets),
            "size": (noise if name == "noise" else epsilon) * scale,
        }
    return results
