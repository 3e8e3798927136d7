"""A student vocabulary cut to the tokens its data uses.

Most of a small text student's parameters sit in its word embeddings: 30,522 × 128 = 3.9M of a 4.4M BERT built from
the teacher's config. Rotten Tomatoes' training texts use about a third of those tokens. `prune_tokenizer` keeps the
tokens a set of texts uses, the special tokens and every single-character piece (so that any text still tokenizes,
falling back to shorter pieces where a held-out word's own token was dropped), and renumbers them in their original
order. WordPiece matches the longest known prefix first, so every text the vocabulary was cut from tokenizes into the
same pieces as before: a student with the pruned tokenizer reads its training data exactly as the teacher does. The
recipe field `prune_vocabulary` cuts the vocabulary to the texts of the training and evaluation splits (so that the
teacher's attention maps and hidden states line up with the student's token by token in both), keeps the model's
embedding rows of the kept tokens, or, with `embedding_init: teacher`, starts them from the teacher's rows of the same
tokens (`project_teacher_embeddings(..., token_ids=kept)`).

```python
tokenizer, kept = prune_tokenizer(teacher_tokenizer, train_texts)
config.vocab_size = len(kept)  # row i of the student's table is token kept[i] of the teacher's
```
"""

import json
from collections.abc import Iterable

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


def _used_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], batch_size: int = 1000) -> set[int]:
    texts, used = list(texts), set()
    for start in range(0, len(texts), batch_size):
        for ids in tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    return used


def _renumber(value, new_ids: dict[int, int]):
    """The tokenizer.json fragments that name ids (added tokens, the post-processor's special tokens, padding), with
    those ids renumbered."""
    if isinstance(value, list):
        return [_renumber(item, new_ids) for item in value]
    if not isinstance(value, dict):
        return value
    renumbered = {}
    for key, item in value.items():
        if key in ("id", "pad_id") and isinstance(item, int):
            item = new_ids[item]
        elif key == "ids" and isinstance(item, list):
            item = [new_ids[i] for i in item]
        elif key in ("sep", "cls") and isinstance(item, list) and len(item) == 2:  # BertProcessing: [token, id]
            item = [item[0], new_ids[item[1]]]
        else:
            item = _renumber(item, new_ids)
        renumbered[key] = item
    return renumbered


def prune_tokenizer(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]
) -> tuple[PreTrainedTokenizerFast, list[int]]:
    """A copy of a WordPiece `tokenizer` (BERT, MiniLM, DistilBERT, ...) with only the tokens `texts` use, the special
    tokens and the single-character pieces, and the kept ids of `tokenizer` in order (new id `i` is old id `kept[i]`).

    Raises `ValueError` for a tokenizer that is not a fast WordPiece one (BPE and Unigram vocabularies cannot drop
    tokens without changing how the kept ones merge).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "WordPiece":
        kind = spec.get("model", {}).get("type", f"slow {type(tokenizer).__name__}")
        raise ValueError(
            f"`prune_vocabulary` cuts WordPiece vocabularies (BERT-like models); this model's tokenizer is {kind}. "
            "Set `prune_vocabulary: false`."
        )
    vocab = spec["model"]["vocab"]
    prefix = spec["model"].get("continuing_subword_prefix") or "##"
    single_characters = {
        index for token, index in vocab.items() if len(token.removeprefix(prefix)) == 1
    }  # every word still tokenizes
    special = {vocab[token] for token in tokenizer.all_special_tokens if token in vocab}
    special |= {added["id"] for added in spec.get("added_tokens", [])}
    kept = sorted(_used_ids(tokenizer, texts) | single_characters | special)
    new_ids = {old: new for new, old in enumerate(kept)}
    by_id = {index: token for token, index in vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(kept)}
    for key in ("added_tokens", "post_processor", "padding"):
        spec[key] = _renumber(spec.get(key), new_ids)
    pruned = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        model_input_names=tokenizer.model_input_names,
        **tokenizer.special_tokens_map,
    )
    return pruned, kept
