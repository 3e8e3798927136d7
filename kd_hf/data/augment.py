"""A larger transfer set for text distillation: TinyBERT-style variants of the training texts, labelled by the teacher.

A student distilled on soft labels learns from whatever inputs the teacher labels, not only from the labelled ones.
`augment_texts` adds `copies` variants of each training text in which every word is, with probability `word_prob`,
replaced by one of its `neighbours` nearest words in the teacher's own input-embedding space (cosine similarity, as
TinyBERT does with GloVe, Jiao et al., 2020, https://huggingface.co/papers/1909.10351), or, with probability
`mask_prob`, by the tokenizer's mask token. The variants carry label -100: they train on the teacher's soft labels
alone (the trainer leaves them out of the cross-entropy), and the teacher cache labels them once.

Variants are a function of the text, the settings and the seed only (each row draws from its own seeded generator),
and are stored through datasets' fingerprinted `map`, so a second run with the same data, teacher and settings reads
them from the cache.

```python
train = augment_texts(train, tokenizer, teacher.get_input_embeddings().weight, text_columns=["text"], copies=4)
```
"""

import hashlib

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase


UNLABELLED = -100


def _whole_words(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The vocabulary's alphabetic whole-word tokens (no sub-word pieces, no special tokens), by text."""
    special = set(tokenizer.all_special_tokens)
    return {
        token: index
        for token, index in tokenizer.get_vocab().items()
        if token.isalpha() and token not in special and not token.startswith("##")
    }


@torch.no_grad()
def embedding_neighbours(
    words: list[str], vocabulary: dict[str, int], embeddings: torch.Tensor, k: int, chunk: int = 1024
) -> dict[str, list[str]]:
    """The `k` nearest vocabulary words of each of `words` (itself excluded) by cosine similarity of `embeddings`
    rows; words outside `vocabulary` get none."""
    names = list(vocabulary)
    table = torch.nn.functional.normalize(embeddings.detach().float()[[vocabulary[n] for n in names]], dim=-1)
    position = {name: i for i, name in enumerate(names)}
    known = [word for word in words if word in position]
    neighbours = {}
    for start in range(0, len(known), chunk):
        batch = known[start : start + chunk]
        rows = torch.tensor([position[word] for word in batch])
        similarity = table[rows] @ table.T
        similarity[torch.arange(len(batch)), rows] = -2  # never the word itself
        best = similarity.topk(min(k, len(names) - 1), dim=-1).indices
        for word, indices in zip(batch, best.tolist()):
            neighbours[word] = [names[i] for i in indices]
    return neighbours


def _variant(text: str, spans: list, neighbours: dict, mask: str, rng, word_prob: float, mask_prob: float) -> str:
    pieces, end = [], 0
    for word, (start, stop) in spans:
        draw = rng.random()
        if draw < mask_prob:
            replacement = mask
        elif draw < mask_prob + word_prob and neighbours.get(word.lower()):
            options = neighbours[word.lower()]
            replacement = options[rng.integers(len(options))]
        else:
            continue
        pieces += [text[end:start], replacement]
        end = stop
    return "".join(pieces) + text[end:]


def augment_texts(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    embeddings: torch.Tensor,
    text_columns: list[str],
    label_column: str = "label",
    copies: int = 4,
    word_prob: float = 0.4,
    mask_prob: float = 0.1,
    neighbours: int = 15,
    seed: int = 0,
) -> datasets.Dataset:
    """`dataset` followed by `copies` variants of each of its rows (see the module docstring), labelled -100.

    Args:
        dataset (`datasets.Dataset`): raw training examples, text in `text_columns`.
        tokenizer (`PreTrainedTokenizerBase`): the teacher's (a fast tokenizer): its pre-tokenizer finds the words,
            its vocabulary gives the replacement words, its mask token the masks.
        embeddings (`torch.Tensor`): the teacher's input-embedding table, one row per token id.
        label_column (`str`): cast to plain integers, so that it can hold -100 beside the class ids.

    Returns:
        `datasets.Dataset`: the original rows, then the variants (`copies` per row, in row order).
    """
    if copies < 1:
        return dataset
    pre_tokenize = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    normalize = tokenizer.backend_tokenizer.normalizer
    mask = tokenizer.mask_token or tokenizer.unk_token

    def words_of(text: str) -> list:
        # Offsets index the normalised text, which for an uncased BERT keeps the length of the original.
        normalised = normalize.normalize_str(text) if normalize is not None else text
        if len(normalised) != len(text):
            normalised = text
        return [
            (text[start:stop], (start, stop))
            for _, (start, stop) in pre_tokenize(normalised)
            if text[start:stop].isalpha()
        ]

    vocabulary = _whole_words(tokenizer)
    seen = {word.lower() for column in text_columns for text in dataset[column] for word, _ in words_of(text or "")}
    table = embedding_neighbours(sorted(seen), vocabulary, embeddings, neighbours)
    settings = [copies, word_prob, mask_prob, neighbours, seed, text_columns, mask]
    digest = hashlib.sha256(embeddings.detach().float().cpu().numpy().tobytes()).hexdigest()

    def make_variants(batch: dict, indices: list[int]) -> dict:
        variants = {name: [] for name in batch}
        for offset, index in enumerate(indices):
            for copy in range(copies):
                rng = np.random.default_rng([seed, index, copy])
                for name, values in batch.items():
                    value = values[offset]
                    if name in text_columns and value:
                        value = _variant(value, words_of(value), table, mask, rng, word_prob, mask_prob)
                    elif name == label_column:
                        value = UNLABELLED
                    variants[name].append(value)
        return variants

    if label_column in dataset.column_names:
        dataset = dataset.cast_column(label_column, datasets.Value("int64"))
    augmented = dataset.map(
        make_variants,
        batched=True,
        with_indices=True,
        new_fingerprint=Hasher.hash([dataset._fingerprint, settings, digest, "augment_texts/1"]),
        desc="Augmenting texts",
    )
    return datasets.concatenate_datasets([dataset, augmented])
