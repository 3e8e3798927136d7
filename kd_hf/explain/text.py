"""Explanations of text classifiers: captum attributions at the token embeddings, merged into words.

Methods:
- `integrated_gradients`: captum's `LayerIntegratedGradients` on the input embeddings (Sundararajan et al., 2017,
  https://huggingface.co/papers/1703.01365); the baseline keeps the model's special tokens and replaces every other
  token with padding ([CLS] [PAD] ... [SEP] for BERT); scores are summed over the hidden dimension.
- `input_x_gradient`: captum's `LayerGradientXActivation`, summed over the hidden dimension.
- `saliency`: the gradient's L2 norm per token (`LayerGradientXActivation` without the input factor).
- `attention_rollout`: attention flow from the first token through all layers (Abnar & Zuidema, 2020,
  https://huggingface.co/papers/2005.00928); needs eager attention.

Sub-word scores are summed into words with the tokenizer's `word_ids`; special tokens are left out.

```python
from kd_hf.explain import explain_text

[explanation] = explain_text(model, tokenizer, ["a quiet triumph"])
explanation.words, explanation.scores
```
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from .explanation import Explanation


TEXT_METHODS = ("integrated_gradients", "input_x_gradient", "saliency", "attention_rollout")
# Rows (texts x integration steps) per forward pass of integrated gradients: bounds its memory (64 texts x 32 steps of
# MiniLM at once took 15 GB).
MAX_INTERPOLATED_ROWS = 256


def _token_scores(model, batch, target, method, n_steps, internal_batch_size, special_tokens_mask=None):
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    extra = {k: v for k, v in batch.items() if k != "input_ids"}
    names = list(extra)

    def forward(input_ids, *values):
        return model(input_ids=input_ids, **dict(zip(names, values))).logits

    embeddings = model.get_input_embeddings()
    additional = tuple(extra[name] for name in names)
    if method == "integrated_gradients":
        baseline = torch.where(special_tokens_mask.bool(), batch["input_ids"], model.config.pad_token_id or 0)
        attributions, delta = LayerIntegratedGradients(forward, embeddings).attribute(
            batch["input_ids"], baseline, target=target, additional_forward_args=additional, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )  # fmt: skip
        return attributions.sum(-1), delta
    if method in ("input_x_gradient", "saliency"):
        explainer = LayerGradientXActivation(forward, embeddings, multiply_by_inputs=method == "input_x_gradient")
        attributions = explainer.attribute(batch["input_ids"], target=target, additional_forward_args=additional)
        return (attributions.sum(-1) if method == "input_x_gradient" else attributions.norm(dim=-1)), None
    if method == "attention_rollout":
        return attention_rollout(model(**batch, output_attentions=True).attentions, batch.get("attention_mask")), None
    raise ValueError(f"Unknown text explanation method {method!r}; use one of {list(TEXT_METHODS)}.")


def attention_rollout(attentions: tuple[torch.Tensor, ...], mask: torch.Tensor | None = None) -> torch.Tensor:
    """How much each token flows into the first token ([CLS]) through every layer: `[batch, tokens]`.

    Each layer's head-averaged attention is mixed with the identity (the residual path), renormalised, and the
    layers are multiplied from the first to the last.
    """
    rollout = None
    for layer in attentions:
        attention = layer.float().mean(1)
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    scores = rollout[:, 0]
    return scores * mask if mask is not None else scores


def merge_words(text: str, encoding, scores: np.ndarray, sequence: int = 0) -> tuple[list[str], np.ndarray]:
    """Sum sub-word scores into the words of `text` (special tokens dropped)."""
    words, merged, index = [], [], {}
    sequence_ids = encoding.sequence_ids  # a `tokenizers.Encoding`: properties, not methods
    for position, word_id in enumerate(encoding.word_ids):
        if word_id is None or sequence_ids[position] != sequence:
            continue
        if word_id not in index:
            start, end = encoding.word_to_chars(word_id, sequence_index=sequence)
            index[word_id] = len(words)
            words.append(text[start:end])
            merged.append(0.0)
        merged[index[word_id]] += float(scores[position])
    return words, np.asarray(merged)


def explain_text(
    model,
    tokenizer,
    texts: list[str],
    method: str = "integrated_gradients",
    target: int | list[int] | None = None,
    n_steps: int = 32,
    batch_size: int = 16,
    internal_batch_size: int | None = None,
    max_length: int = 128,
    progress: bool | None = None,
) -> list[Explanation]:
    """Explain a text classifier's predictions, one `Explanation` per text, scores per word.

    Args:
        model (`PreTrainedModel`): a sequence classifier (eager attention for `attention_rollout`).
        tokenizer (`PreTrainedTokenizerFast`): its tokenizer (a fast one: word ids are needed to merge sub-words).
        texts (`list[str]`): the texts.
        method (`str`, *optional*, defaults to `"integrated_gradients"`): one of `TEXT_METHODS`.
        target (`int` or `list[int]`, *optional*): the class to explain; defaults to each prediction.
        n_steps (`int`, *optional*, defaults to 32): integration steps of integrated gradients.
        batch_size (`int`, *optional*, defaults to 16): texts per batch.
        internal_batch_size (`int`, *optional*, defaults to 256): captum's batch of interpolated inputs (bounds IG's
            memory).
        max_length (`int`, *optional*, defaults to 128): longer texts are truncated.
        progress (`bool`, *optional*): show a progress bar; defaults to more than one batch.
    """
    model.eval()
    device = next(model.parameters()).device
    targets = [target] * len(texts) if target is None or isinstance(target, int) else list(target)
    if internal_batch_size is None:  # captum would run every interpolated input of a batch at once
        internal_batch_size = MAX_INTERPOLATED_ROWS
    # Texts of similar length share a batch, so that little padding is explained; the order is restored at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    texts, targets = [texts[i] for i in order], [targets[i] for i in order]
    starts = range(0, len(texts), batch_size)
    explanations = []
    for start in tqdm(
        starts, desc=f"Explaining ({method})", disable=not (progress or (progress is None and len(starts) > 1))
    ):
        chunk = texts[start : start + batch_size]
        encoded = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                            return_special_tokens_mask=True)  # fmt: skip
        batch = {k: v.to(device) for k, v in encoded.items() if k != "special_tokens_mask"}
        with torch.no_grad():
            probabilities = model(**batch).logits.float().softmax(-1)
        chunk_targets = [t if t is not None else int(p.argmax()) for t, p in zip(targets[start:], probabilities)]
        target_tensor = torch.tensor(chunk_targets, device=device)
        special = encoded["special_tokens_mask"].to(device)
        scores, delta = _token_scores(model, batch, target_tensor, method, n_steps, internal_batch_size, special)
        scores = scores.detach().float().cpu().numpy()
        for i, text in enumerate(chunk):
            words, word_scores = merge_words(text, encoded[i], scores[i])
            explanations.append(
                Explanation(
                    method=method, target=chunk_targets[i], label=str(model.config.id2label[chunk_targets[i]]),
                    probability=float(probabilities[i, chunk_targets[i]]), scores=word_scores, words=words,
                    delta=float(delta[i]) if delta is not None else None,
                    settings={"n_steps": n_steps, "baseline": "special tokens kept, others [PAD]"}
                    if method == "integrated_gradients" else {},
                )
            )  # fmt: skip
    restored = [None] * len(explanations)
    for position, explanation in zip(order, explanations):
        restored[position] = explanation
    return restored
