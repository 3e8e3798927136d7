"""
Tokenisation for a student and a teacher that may not share a vocabulary.

When the two tokenizers match, one `input_ids` serves both models. When they differ (say a BERT teacher and a
RoBERTa student), each example also carries the teacher's own encoding of the same text under `teacher_`-prefixed
keys, and [`DistillationDataCollator`] pads each side with its own tokenizer. `kd_hf.DistillationTrainer` routes
`teacher_*` inputs to the teacher and everything else to the student.
"""

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase


TEACHER_PREFIX = "teacher_"
# Teacher *outputs* cached with a dataset (`kd_hf.teacher_cache`); not inputs, though they share the prefix.
TEACHER_CACHE_COLUMNS = ("teacher_logits", "teacher_attributions")
# For each token, the whitespace-separated word of the text it starts in (-1 for special tokens): how attributions of
# two tokenizers are compared word by word. Made only when the two tokenizers differ.
WORD_INDEX_COLUMNS = ("word_index", TEACHER_PREFIX + "word_index")


def model_inputs(batch: dict, teacher: bool = False) -> dict:
    """The student's forward inputs in a batch, or (`teacher=True`) the teacher's own `teacher_` ones, unprefixed."""
    skip = {"labels", *TEACHER_CACHE_COLUMNS, *WORD_INDEX_COLUMNS}
    if teacher:
        return {
            k[len(TEACHER_PREFIX) :]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX) and k not in skip
        }
    return {k: v for k, v in batch.items() if k not in skip and not k.startswith(TEACHER_PREFIX)}


def backend_spec(tokenizer: PreTrainedTokenizerBase) -> dict | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    # Truncation and padding are call-time settings that the tokenizer rewrites on each call, not its vocabulary.
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return spec


def tokenizers_match(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """
    Whether two tokenizers turn any text into the same ids, so that the teacher can read the student's inputs.

    Fast tokenizers are compared by their whole pipeline (normaliser, pre-tokeniser, vocabulary, post-processor);
    others by vocabulary. Special tokens and padding side must agree too, since the collator pads with them.

    Args:
        a (`PreTrainedTokenizerBase`): the student's tokenizer.
        b (`PreTrainedTokenizerBase`): the teacher's tokenizer.

    Returns:
        `bool`: `True` when one encoding serves both models.
    """
    if a is b:
        return True
    if a.padding_side != b.padding_side or a.special_tokens_map != b.special_tokens_map:
        return False
    spec_a, spec_b = backend_spec(a), backend_spec(b)
    if spec_a is not None and spec_b is not None:
        return spec_a == spec_b
    # A slow tokenizer's lower-casing or splitting is not inspectable; the class name stands in for it.
    return type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab()


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[list[str]], max_length: int, word_index: bool = False
) -> dict[str, list]:
    # No padding here: the collator pads each batch to its longest example, which is far shorter than max_length.
    encoded = tokenizer(*texts, truncation=True, max_length=max_length, return_offsets_mapping=word_index)
    if not word_index:
        return dict(encoded)
    rows = [[column[row] for column in texts] for row in range(len(texts[0]))]
    index = [
        _word_index(row_texts, encoded["offset_mapping"][row], encoded.sequence_ids(row))
        for row, row_texts in enumerate(rows)
    ]
    encoded = {k: v for k, v in encoded.items() if k != "offset_mapping"}
    encoded["word_index"] = index
    return encoded


def _word_index(texts: list[str], offsets: list[tuple[int, int]], sequence_ids: list[int | None]) -> list[int]:
    """Whitespace word (counted across a sentence pair) that each token starts in; -1 for special tokens."""
    starts = [[match.start() for match in re.finditer(r"\S+", text)] for text in texts]
    first_word = [0, len(starts[0])]
    index = []
    for (start, end), sequence in zip(offsets, sequence_ids):
        if sequence is None or start == end:
            index.append(-1)
        else:
            index.append(first_word[sequence] + max(0, bisect.bisect_right(starts[sequence], start) - 1))
    return index


def tokenize_for_pair(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    text_columns: list[str] | tuple[str, ...] = ("text",),
    label_column: str | None = "label",
    max_length: int = 128,
) -> datasets.Dataset:
    """
    Tokenises a text-classification dataset for the student and, when its vocabulary differs, for the teacher.

    The work is one batched, fingerprinted `Dataset.map`, so a second call with the same arguments reads the datasets
    cache (for datasets backed by files, which includes every loader of `kd_hf.data`).

    Args:
        dataset (`datasets.Dataset`):
            Raw examples with the text column(s) and an integer (or `ClassLabel`) label column.
        tokenizer (`PreTrainedTokenizerBase`):
            The student's tokenizer.
        teacher_tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The teacher's tokenizer; ignored when [`tokenizers_match`] says it encodes like `tokenizer`.
        text_columns (`list[str]`, *optional*, defaults to `("text",)`):
            One column (single sentences) or two (sentence pairs, e.g. premise and hypothesis).
        label_column (`str`, *optional*, defaults to `"label"`):
            Column renamed to `labels`, keeping its `ClassLabel` names; `None` or absent for unlabelled data.
        max_length (`int`, *optional*, defaults to 128):
            Longest encoding kept, in tokens of each tokenizer; longer texts are truncated.

    Returns:
        `datasets.Dataset`: the tokenizer's columns (`input_ids`, `attention_mask`, and `token_type_ids` if it makes
        them), `labels`, and `teacher_input_ids`, `teacher_attention_mask`, ... when the teacher needs its own
        encoding. Raw columns are dropped; nothing is padded.
    """
    text_columns = list(text_columns)
    if len(text_columns) not in (1, 2):
        raise ValueError(f"`text_columns` takes one column or a sentence pair, got {text_columns}.")
    missing = [column for column in text_columns if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"text column(s) {missing} not in the dataset (columns: {', '.join(dataset.column_names)}); "
            "set `text_columns` in the recipe."
        )
    if label_column is not None and label_column in dataset.column_names:
        feature = dataset.features[label_column]
        if not isinstance(feature, datasets.ClassLabel) and not str(getattr(feature, "dtype", "")).startswith("int"):
            raise ValueError(
                f"label column {label_column!r} holds {feature}, not class ids; encode it first with "
                "`kd_hf.data.encode_labels` (or use `kd_hf.data.prepare_datasets`, which does)."
            )
        if label_column != "labels":
            dataset = dataset.rename_column(label_column, "labels")
    if teacher_tokenizer is not None and tokenizers_match(tokenizer, teacher_tokenizer):
        teacher_tokenizer = None

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[column] for column in text_columns]
        for column, values in zip(text_columns, texts, strict=True):
            if any(value is None for value in values):
                raise ValueError(f"text column {column!r} has empty rows; drop them (e.g. `dataset.filter`) first.")
        # Different tokenizers also record word indices, so attributions can be matched word by word.
        encoded = _encode(tokenizer, texts, max_length, word_index=teacher_tokenizer is not None)
        if teacher_tokenizer is not None:
            teacher = _encode(teacher_tokenizer, texts, max_length, word_index=True)
            encoded.update({TEACHER_PREFIX + key: value for key, value in teacher.items()})
        return encoded

    return dataset.map(
        tokenize,
        batched=True,
        remove_columns=[column for column in dataset.column_names if column != "labels"],
        desc="Tokenizing" + (" for student and teacher" if teacher_tokenizer is not None else ""),
    )


def misaligned_rows(dataset: datasets.Dataset) -> int | None:
    """How many rows of a [`tokenize_for_pair`] dataset the student and the teacher read as different tokens (their
    `word_index` columns differ), or `None` when the dataset has no word indices to tell. Where none differ, token
    `i` of the student's encoding covers the same words as token `i` of the teacher's, as when the student's
    tokenizer is the teacher's with a pruned vocabulary (`kd_hf.vocabulary`) on the texts it was cut from."""
    if not set(WORD_INDEX_COLUMNS) <= set(dataset.column_names):
        return None
    student, teacher = (dataset[name] for name in WORD_INDEX_COLUMNS)
    return sum(row != teacher_row for row, teacher_row in zip(student, teacher, strict=True))


@dataclass
class DistillationDataCollator:
    """
    Pads student inputs and `teacher_`-prefixed inputs separately, each with its own tokenizer.

    Two tokenizers can disagree on the padding id, the padding side and the length of the same text, so the two
    halves of a batch are padded to their own longest example.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The student's tokenizer.
        teacher_tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The teacher's tokenizer; needed only when features hold `teacher_*` keys.
        pad_to_multiple_of (`int`, *optional*):
            Round padded lengths up to a multiple of this (8 suits tensor cores under fp16/bf16).
    """

    tokenizer: PreTrainedTokenizerBase
    teacher_tokenizer: PreTrainedTokenizerBase | None = None
    pad_to_multiple_of: int | None = None

    def _pad(self, tokenizer: PreTrainedTokenizerBase, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(
            tokenizer.pad(features, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        extra = TEACHER_CACHE_COLUMNS + WORD_INDEX_COLUMNS
        cached = {name: [f[name] for f in features] for name in extra if name in features[0]}
        features = [{k: v for k, v in f.items() if k not in extra} for f in features]
        student, teacher, labels = [], [], []
        for feature in features:
            student.append({k: v for k, v in feature.items() if not k.startswith(TEACHER_PREFIX) and k != "labels"})
            teacher.append({k[len(TEACHER_PREFIX) :]: v for k, v in feature.items() if k.startswith(TEACHER_PREFIX)})
            if "labels" in feature:
                labels.append(feature["labels"])

        batch = self._pad(self.tokenizer, student)
        if any(teacher):
            if self.teacher_tokenizer is None:
                raise ValueError(
                    "Features hold teacher inputs (`teacher_*` keys) but the collator has no `teacher_tokenizer`; "
                    "pass the teacher's tokenizer to `DistillationDataCollator`."
                )
            batch.update({TEACHER_PREFIX + k: v for k, v in self._pad(self.teacher_tokenizer, teacher).items()})
        if labels:
            batch["labels"] = torch.as_tensor([int(label) for label in labels], dtype=torch.long)
        if "teacher_logits" in cached:
            batch["teacher_logits"] = torch.as_tensor(cached["teacher_logits"], dtype=torch.float32)
        # Per-token values line up with the padded ids of the side they belong to.
        for name, value, dtype in (
            ("teacher_attributions", 0, torch.float32),
            ("word_index", -1, torch.long),
            (TEACHER_PREFIX + "word_index", -1, torch.long),
        ):
            if name not in cached:
                continue
            teacher_side = name != "word_index" and TEACHER_PREFIX + "input_ids" in batch
            tokenizer = self.teacher_tokenizer if teacher_side else self.tokenizer
            length = batch[TEACHER_PREFIX + "input_ids" if teacher_side else "input_ids"].shape[1]
            batch[name] = _pad_rows(cached[name], length, tokenizer.padding_side, value, dtype)
        return batch


def _pad_rows(rows: list[list], length: int, side: str, value, dtype) -> torch.Tensor:
    """Ragged per-token rows padded with `value` on `side`, as the tokenizer padded the ids."""
    padded = torch.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        row = torch.as_tensor(row, dtype=dtype)
        if side == "left":
            padded[i, length - len(row) :] = row
        else:
            padded[i, : len(row)] = row
    return padded
