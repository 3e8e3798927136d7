"""Explanations of text classifiers: scores per token of any explainer of `kd_hf.explain.registry`, merged into words.

Attributions are taken at the output of the input embeddings. Methods that compare with a baseline (integrated
gradients, occlusion) use the text with the model's special tokens kept and every other token replaced with padding
([CLS] [PAD] ... [SEP] for BERT). Sub-word scores are summed into words with the tokenizer's `word_ids`; special
tokens are left out.

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
from .inputs import TEXT_BASELINE, text_inputs
from .kernels import onednn_linears
from .memory import keep_freed_memory
from .registry import explainer_names, get_explainer


TEXT_METHODS = explainer_names("text")
# Rows (texts x integration steps) per forward pass of integrated gradients: bounds its memory (64 texts x 32 steps of
# MiniLM at once took 15 GB). On CPU, 64 (two texts x 32 steps): as fast as 128 or 256 on one thread, 4% faster on two,
# and no block above the 32 MiB that glibc keeps for the next pass (`kd_hf.explain.memory`) for texts of up to 64
# tokens (the MiniLM teacher, 32 training snippets, 2026-12-06; 256 rows faulted up to 88,000 pages per 32 texts).
MAX_INTERPOLATED_ROWS = 256
CPU_INTERPOLATED_ROWS = 64


def _token_scores(
    model, batch, target, method, n_steps, internal_batch_size, special_tokens_mask=None, encodings=None, logits=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores per token of `method` on a tokenised `batch`, `[batch, tokens]`, and the convergence delta (or `None`)."""
    inputs = text_inputs(
        model, batch, special_tokens_mask, encodings, n_steps=n_steps, internal_batch_size=internal_batch_size,
        logits=logits,
    )  # fmt: skip
    return get_explainer(method, "text").text(inputs, target)


def length_buckets(tokenizer, texts: list[str], batch_size: int, max_length: int):
    """Batches of texts with the same number of tokens, so that no padding is explained (each padded token would cost
    a forward and a backward per integration step): the order that sorts `texts` by length, and `(start, end)`
    ranges of that order, at most `batch_size` long."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == batch_size or lengths[order[end]] != lengths[order[start]]:
            batches.append((start, end))
            start = end
    return order, batches


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
        method (`str`, *optional*, defaults to `"integrated_gradients"`): one of `TEXT_METHODS` (the explainers of
            `kd_hf.explain.registry` that explain text).
        target (`int` or `list[int]`, *optional*): the class to explain; defaults to each prediction.
        n_steps (`int`, *optional*, defaults to 32): integration steps, for the methods that take them.
        batch_size (`int`, *optional*, defaults to 16): texts per batch.
        internal_batch_size (`int`, *optional*): captum's batch of interpolated or occluded inputs (bounds the
            memory of integrated gradients and occlusion); defaults to 64 on CPU and 256 on a GPU, at least
            `batch_size`.
        max_length (`int`, *optional*, defaults to 128): longer texts are truncated.
        progress (`bool`, *optional*): show a progress bar; defaults to more than one batch.
    """
    explainer = get_explainer(method, "text")
    settings = {"n_steps": n_steps} if explainer.takes_n_steps else {}
    texts = list(texts)  # a dataset's column reads lazily; the tokenizer takes lists
    model.eval()
    device = next(model.parameters()).device
    targets = [target] * len(texts) if target is None or isinstance(target, int) else list(target)
    if internal_batch_size is None:  # captum would run every interpolated input of a batch at once
        internal_batch_size = CPU_INTERPOLATED_ROWS if device.type == "cpu" else MAX_INTERPOLATED_ROWS
        internal_batch_size = max(internal_batch_size, batch_size)  # captum runs one step of every text per pass
    order, batches = length_buckets(tokenizer, texts, batch_size, max_length)
    texts, targets = [texts[i] for i in order], [targets[i] for i in order]
    explanations = []
    with onednn_linears(device), keep_freed_memory(device):
        for start, end in tqdm(
            batches, desc=f"Explaining ({method})", disable=not (progress or (progress is None and len(batches) > 1))
        ):
            chunk = texts[start:end]
            encoded = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                                return_special_tokens_mask=True)  # fmt: skip
            batch = {k: v.to(device) for k, v in encoded.items() if k != "special_tokens_mask"}
            with torch.no_grad():
                logits = model(**batch).logits
            probabilities = logits.float().softmax(-1)
            chunk_targets = [t if t is not None else int(p.argmax()) for t, p in zip(targets[start:], probabilities)]
            target_tensor = torch.tensor(chunk_targets, device=device)
            special = encoded["special_tokens_mask"].to(device)
            scores, delta = _token_scores(
                model, batch, target_tensor, method, n_steps, internal_batch_size, special, encoded.encodings, logits
            )
            scores = scores.detach().float().cpu().numpy()
            for i, text in enumerate(chunk):
                words, word_scores = merge_words(text, encoded[i], scores[i])
                explanations.append(
                    Explanation(
                        method=method, target=chunk_targets[i], label=str(model.config.id2label[chunk_targets[i]]),
                        probability=float(probabilities[i, chunk_targets[i]]), scores=word_scores, words=words,
                        delta=float(delta[i]) if delta is not None else None,
                        settings={**settings, "baseline": TEXT_BASELINE},
                    )
                )  # fmt: skip
    restored = [None] * len(explanations)
    for position, explanation in zip(order, explanations):
        restored[position] = explanation
    return restored
