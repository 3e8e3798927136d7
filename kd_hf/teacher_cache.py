"""Teacher outputs computed once and stored with the dataset.

On 2 CPU cores the teacher's forward pass costs more than the student's whole training step; over several epochs (or
several runs) the same teacher sees the same examples again and again. `cache_teacher_outputs` runs the teacher once
over a dataset and stores its logits, and optionally its attributions, as columns (`teacher_logits`,
`teacher_attributions`) through datasets' fingerprinted `map`: a second call with the same teacher (weights, config,
attention kernel and dtype), the same teacher inputs and settings reads the cache; any change recomputes it.
`DistillationTrainer` then skips the teacher whenever a batch holds what its losses need.

The cache is keyed on the values the teacher reads (its own `teacher_*` encoding when the student tokenizes
differently, else the model inputs), not on how the dataset was made: a student with another vocabulary (a pruned
one, say) or another image size reuses the labels of a large transfer set that the teacher reads unchanged.

The cache is only right when every pass over the data feeds the teacher the same inputs. A dataset with an on-the-fly
transform (`set_transform` / `with_transform`, the usual place of random augmentation) or one that is not a
`datasets.Dataset` (a stream, a torch dataset) is left uncached, with a warning: the teacher then runs at every step.
"""

import hashlib
import json
import logging

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets.fingerprint import Hasher
from torch import nn
from transformers import PreTrainedModel

from .data import TEACHER_CACHE_COLUMNS, TEACHER_PREFIX, WORD_INDEX_COLUMNS, model_inputs
from .explain.gradients import gradient_attribution


logger = logging.getLogger(__name__)

# Bump when the cached values change meaning, so that old caches are not reused. 2: rows stored by length.
CACHE_VERSION = 2


def uncacheable_reason(dataset) -> str | None:
    """Why the teacher's outputs on `dataset` cannot be computed once and reused, or `None` when they can."""
    if not isinstance(dataset, datasets.Dataset):
        return f"a {type(dataset).__name__} is not a `datasets.Dataset`, whose rows could hold them"
    if dataset.format["type"] == "custom":
        return (
            "it has an on-the-fly transform (`set_transform` / `with_transform`), whose output may differ at every "
            "epoch (random augmentation)"
        )
    return None


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's weights: the teacher's identity, whatever its name or folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def settings_digest(model: nn.Module) -> str:
    """SHA-256 of what besides the weights decides a teacher's outputs: each network's config (labels, architecture
    settings), its attention kernel, the weights' dtypes and an ensemble's combination; not where it was loaded
    from."""
    configs = {id(m.config): m.config for m in model.modules() if isinstance(m, PreTrainedModel)}
    settings = []
    for config in configs.values():
        values = config.to_dict()
        for key in ("_name_or_path", "name_or_path", "transformers_version"):
            values.pop(key, None)
        values["attn_implementation"] = config._attn_implementation
        settings.append(values)
    settings.append(sorted({str(p.dtype) for p in model.parameters()}))
    # An ensemble's soft labels also depend on how the members are combined (its weights are in the state dict).
    settings.append([getattr(model, name, None) for name in ("combination", "temperature")])
    try:
        text = json.dumps(settings, sort_keys=True, default=str)
    except TypeError:  # a map with keys of mixed types cannot be sorted; its order is the config's own
        text = json.dumps(settings, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def teacher_inputs_digest(dataset: datasets.Dataset) -> str:
    """SHA-256 of what the teacher reads from `dataset`, row by row in the dataset's order (through any `select` or
    `shuffle`): its own `teacher_*` inputs when the rows have them, else the student's, under the teacher's argument
    names, so that both layouts of the same encoding agree."""
    not_inputs = {"labels", *TEACHER_CACHE_COLUMNS, *WORD_INDEX_COLUMNS}
    columns = [c for c in dataset.column_names if c not in not_inputs]
    columns = sorted([c for c in columns if c.startswith(TEACHER_PREFIX)] or columns)
    digest = hashlib.sha256()
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=10_000):
        for name in columns:
            digest.update(name.removeprefix(TEACHER_PREFIX).encode())
            _hash_values(digest, batch.column(name).combine_chunks())
    return digest.hexdigest()


def _hash_values(digest, array: pa.Array) -> None:
    """Values and nesting, not storage: datasets stores `input_ids` as int32 and `teacher_input_ids` as int64."""
    if isinstance(array.type, pa.ExtensionType):  # datasets' ArrayND features
        array = array.storage
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        _hash_values(digest, pc.list_value_length(array))
        _hash_values(digest, pc.list_flatten(array))
    elif pa.types.is_integer(array.type) or pa.types.is_boolean(array.type):
        digest.update(b"int" + array.cast(pa.int64()).to_numpy(zero_copy_only=False).tobytes())
    elif pa.types.is_floating(array.type):
        digest.update(b"float" + array.cast(pa.float64()).to_numpy(zero_copy_only=False).tobytes())
    else:  # strings and the like: by value, not by the addresses of Python objects
        digest.update(json.dumps(array.to_pylist(), default=str).encode())


def cache_teacher_outputs(
    dataset: datasets.Dataset,
    teacher: nn.Module,
    collator,
    attributions: bool = False,
    attribution_method: str = "input_x_gradient",
    batch_size: int = 64,
    n_steps: int = 8,
    special_ids: tuple[int, ...] = (),
) -> datasets.Dataset:
    """Add `teacher_logits` (and `teacher_attributions`) columns computed by `teacher` in eval mode.

    A dataset that may give other inputs at every pass (see `uncacheable_reason`) is returned unchanged, with a
    warning; a dict of datasets (several eval sets) is cached member by member.

    Args:
        dataset (`datasets.Dataset`): model inputs (as `kd_hf.data.prepare_datasets` makes them).
        teacher (`nn.Module`): the teacher, on the device it should run on.
        collator: batches rows of `dataset` into tensors (the trainer's data collator).
        attributions (`bool`, *optional*, defaults to `False`): also store the teacher's attribution of its top-1
            class (per real token, or per pixel), for the `attribution` loss.
        attribution_method (`str`, *optional*, defaults to `"input_x_gradient"`): see `kd_hf.explain.gradients`.
        batch_size (`int`, *optional*, defaults to 64): examples per teacher forward pass.
        n_steps, special_ids: the settings of `integrated_gradients` (see `kd_hf.explain.gradients`).

    Returns:
        `datasets.Dataset`: `dataset` with the cached columns (replacing any from an earlier teacher).
    """
    options = dict(
        attributions=attributions, attribution_method=attribution_method, batch_size=batch_size, n_steps=n_steps,
        special_ids=special_ids,
    )  # fmt: skip
    if isinstance(dataset, dict):
        return {name: cache_teacher_outputs(part, teacher, collator, **options) for name, part in dataset.items()}
    reason = uncacheable_reason(dataset)
    if reason is not None:
        logger.warning("Teacher cache off for this dataset: %s. The teacher runs at every step instead.", reason)
        return dataset
    dataset = dataset.remove_columns([c for c in TEACHER_CACHE_COLUMNS if c in dataset.column_names])
    fingerprint = Hasher.hash(
        [
            teacher_inputs_digest(dataset),
            weights_digest(teacher),
            settings_digest(teacher),
            attributions,
            attribution_method,
            n_steps if attribution_method == "integrated_gradients" else None,
            sorted(special_ids) if attribution_method == "integrated_gradients" else None,
            CACHE_VERSION,
        ]
    )
    device = next(teacher.parameters()).device
    dtype = next(teacher.parameters()).dtype
    teacher.eval()

    def compute(batch: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        collated = collator(rows)
        inputs = model_inputs(collated, teacher=True) or model_inputs(collated)
        inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
        if not attributions:
            with torch.no_grad():
                return {"teacher_logits": teacher(**inputs).logits.float().cpu().tolist()}
        scores, outputs = gradient_attribution(
            teacher, inputs, None, attribution_method, n_steps=n_steps, special_ids=special_ids
        )
        scores = scores.detach().float().cpu()
        mask = inputs.get("attention_mask")
        # Only real tokens are kept; the collator pads them back to each batch's length.
        rows = [row[m.bool().cpu()].tolist() for row, m in zip(scores, mask)] if mask is not None else scores.tolist()
        return {"teacher_logits": outputs.logits.detach().float().cpu().tolist(), "teacher_attributions": rows}

    # Only the new columns are written, under a key of the teacher's inputs, and then joined to the rows: another
    # student's encoding of the same texts finds them. Texts are run shortest first, so that each batch pads little.
    order = length_order(dataset)
    outputs = (dataset if order is None else dataset.select(order)).map(
        compute,
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        new_fingerprint=fingerprint,
        desc="Caching teacher outputs",
    )
    if order is not None:
        outputs = outputs.select(np.argsort(order)).flatten_indices()
    return datasets.concatenate_datasets([dataset, outputs], axis=1)


def length_order(dataset: datasets.Dataset) -> np.ndarray | None:
    """The rows of `dataset` from the fewest teacher tokens to the most (stable), or `None` when its inputs have no
    length (images). Batched in that order, the teacher pads each batch to nearly its own length; batches of 64 IMDB
    sentences in row order pad to 2.4 times their mean length."""
    column = TEACHER_PREFIX + "input_ids" if TEACHER_PREFIX + "input_ids" in dataset.column_names else "input_ids"
    if column not in dataset.column_names:
        return None
    ids = dataset.select_columns([column]).with_format("arrow")[:][column].combine_chunks()
    return np.argsort(pc.list_value_length(ids).to_numpy(zero_copy_only=False), kind="stable")
