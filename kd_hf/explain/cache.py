"""A disk cache of a teacher's explanations.

A report explains the same examples with the same teacher at every run (`kd-hf distill`, `kd-hf eval`, each seed
of a benchmark), and the teacher's integrated gradients cost most of it: 200 texts of MiniLM at 32 steps take minutes
on a CPU. `cached_explanations` keeps what `explain_model` returned under the datasets cache
(`$HF_DATASETS_CACHE/kd_hf_explanations/`), keyed as the teacher cache of training is (`kd_hf.teacher_cache`): the
model's weights and config, its tokenizer, the examples and every setting. Any change is another entry. Entries are
JSON (arrays with their dtype), written atomically, and never unpickled.
"""

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher

from ..data.text import backend_spec
from ..teacher_cache import settings_digest, weights_digest
from .explanation import Explanation


logger = logging.getLogger(__name__)

# Bump when what `explain_model` computes changes, so that older entries are not read.
CACHE_VERSION = 2  # 2: text attributed at the embeddings by the explainer registry


def _examples_digest(examples) -> str:
    if torch.is_tensor(examples):
        return Hasher.hash([str(examples.dtype), list(examples.shape), examples.detach().cpu().numpy().tobytes()])
    return Hasher.hash(list(examples))


def _tokenizer_digest(tokenizer) -> str | None:
    if tokenizer is None:
        return None
    spec = backend_spec(tokenizer)  # its vocabulary and rules, not the call-time truncation it keeps
    return Hasher.hash(json.dumps(spec, sort_keys=True)) if spec is not None else Hasher.hash(tokenizer)


def cache_path(model, examples, tokenizer, options: dict) -> str:
    """Where the explanations of `examples` by `model` with `options` (those of `explain_model`) are kept."""
    key = Hasher.hash(
        [
            weights_digest(model), settings_digest(model), model.training, _tokenizer_digest(tokenizer),
            _examples_digest(examples),
            sorted((name, repr(value)) for name, value in options.items()), CACHE_VERSION,
        ]
    )  # fmt: skip
    return os.path.join(str(datasets.config.HF_DATASETS_CACHE), "kd_hf_explanations", f"{key}.json")


def _encode(value):
    if isinstance(value, Explanation):
        return {"__explanation__": _encode(asdict(value))}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        if "__explanation__" in value:
            return Explanation(**_decode(value["__explanation__"]))
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def cached_explanations(model, examples, tokenizer, options: dict, compute: Callable[[], dict]) -> dict:
    """`compute()` (an `explain_model` call for `model`, `examples`, `tokenizer` and `options`), read from the cache
    when an earlier call stored it, else computed and stored."""
    path = cache_path(model, examples, tokenizer, options)
    if os.path.isfile(path):
        try:
            with open(path) as file:
                return _decode(json.load(file))
        except (OSError, ValueError, TypeError) as error:
            logger.warning("Explanation cache entry %s is unreadable (%s): explaining again.", path, error)
    explained = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor, staging = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(_encode(explained), file)
        os.replace(staging, path)
    except OSError as error:  # a full or read-only cache costs the next run time, never this run its results
        logger.warning("Could not store the explanations in %s (%s).", path, error)
        if os.path.exists(staging):
            os.remove(staging)
    return explained
