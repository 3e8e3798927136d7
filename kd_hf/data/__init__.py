"""
Data for distillation: bundled offline corpora, loading from a recipe, label encoding, and inputs for a student and
a teacher.

The usual entry point is [`prepare_datasets`]; the pieces it chains are public for scripts and tests.
"""

from .augment import augment_texts
from .labels import encode_labels, label_names
from .loading import add_transfer_set, load_raw_datasets, prepare_datasets, split_names
from .offline import OFFLINE_PREFIX, hub_equivalent, load_offline_dataset, offline_model_path
from .text import (
    TEACHER_CACHE_COLUMNS,
    TEACHER_PREFIX,
    WORD_INDEX_COLUMNS,
    DistillationDataCollator,
    misaligned_rows,
    model_inputs,
    tokenize_for_pair,
    tokenizers_match,
)
from .vision import default_image_processor, preprocess_images


__all__ = [
    "OFFLINE_PREFIX",
    "TEACHER_CACHE_COLUMNS",
    "TEACHER_PREFIX",
    "WORD_INDEX_COLUMNS",
    "DistillationDataCollator",
    "add_transfer_set",
    "augment_texts",
    "default_image_processor",
    "encode_labels",
    "hub_equivalent",
    "label_names",
    "load_offline_dataset",
    "load_raw_datasets",
    "misaligned_rows",
    "model_inputs",
    "offline_model_path",
    "prepare_datasets",
    "preprocess_images",
    "split_names",
    "tokenize_for_pair",
    "tokenizers_match",
]
