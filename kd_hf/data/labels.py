"""
Label columns: checking a recipe's columns against a split, naming the classes, and encoding labels as class ids.

A split may lack the label column only when distilling with the default `label_column` (its examples learn from the
teacher's soft labels alone); empty label cells are refused at load, before anything is tokenised.
"""

from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from transformers.utils import logging


logger = logging.get_logger(__name__)

# `label_column`'s default: a dataset without such a column is unlabelled (for distillation), not a typo in a recipe.
_DEFAULT_LABEL_COLUMN = "label"


def check_columns(dataset: datasets.Dataset, args: Any, split: str) -> None:
    """Raises a `ValueError` naming the recipe field to set when `split` lacks the recipe's text (or image) or label
    column, or has empty label cells; a missing default label column is only a warning when distilling."""
    if args.is_image_task:
        required = [("image column", args.image_column, "image_column")]
    else:
        required = [("text column", column, "text_columns") for column in args.text_columns]
    distilling = args.teacher_model_name_or_path is not None
    columns = dataset.column_names
    if args.label_column in columns:
        _check_label_cells(dataset, args.label_column, split)
    elif distilling and args.label_column == _DEFAULT_LABEL_COLUMN:
        logger.warning(
            f"No label column {args.label_column!r} in split {split!r} (columns: {', '.join(columns)}): its examples "
            "learn from the teacher's soft labels alone. Set `label_column` if one of these columns holds labels."
        )
    else:
        required.append(("label column", args.label_column, "label_column"))
    for kind, column, field_name in required:
        if column in columns:
            continue
        message = (
            f"{kind} {column!r} not in the dataset (split {split!r}; columns: {', '.join(columns)}); "
            f"set `{field_name}` in the recipe."
        )
        images = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
        if images and not args.is_image_task:
            message += f" This is an image dataset: set `image_column: {images[0]}` to classify images."
        if kind == "label column" and not distilling:
            message += (
                " `kd-hf train` learns from labels alone; to learn from unlabelled examples, distil a teacher's soft "
                "labels with `kd-hf distill` (set `teacher_model_name_or_path`)."
            )
        raise ValueError(message)


def _check_label_cells(dataset: datasets.Dataset, column: str, split: str) -> None:
    """An example without a label would crash mid-training: refuse empty cells (None, NaN, '' or a `ClassLabel`'s
    -1) at load, with their count."""
    values = dataset.with_format("arrow")[column]
    if isinstance(values, pa.Table):
        values = values.column(0)
    empty = pc.is_null(values)
    if pa.types.is_floating(values.type):
        empty = pc.or_(empty, pc.fill_null(pc.is_nan(values), False))
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        empty = pc.or_(empty, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), False))
    elif isinstance(dataset.features[column], datasets.ClassLabel):
        empty = pc.or_(empty, pc.fill_null(pc.less(values, 0), False))
    count = pc.sum(empty).as_py() or 0
    if count:
        first = pc.index(empty, True).as_py()
        raise ValueError(
            f"label column {column!r} has {count} empty rows of {dataset.num_rows} in split {split!r} (None, NaN, '' "
            f"or -1; the first is row {first}); drop them (e.g. `dataset.filter`) or fill them in before training."
        )


def label_names(dataset: datasets.Dataset, label_column: str = "label") -> list[str]:
    """
    Class names in id order: the `ClassLabel` names when the column has them, else its sorted values as strings.

    Args:
        dataset (`datasets.Dataset`):
            Raw or processed examples; a processed dataset's `labels` column is used when `label_column` is absent.
        label_column (`str`, *optional*, defaults to `"label"`):
            The label column.

    Returns:
        `list[str]`: the class names; class `i` is `names[i]`.
    """
    if label_column not in dataset.column_names and "labels" in dataset.column_names:
        label_column = "labels"
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(value) for value in sorted(value for value in dataset.unique(label_column) if value is not None)]


def encode_labels(
    dataset: datasets.Dataset, label_column: str = "label", names: list[str] | None = None
) -> datasets.Dataset:
    """
    Casts a label column to `ClassLabel(names)`, so that class `i` is `names[i]` everywhere downstream.

    Args:
        dataset (`datasets.Dataset`):
            Examples whose labels are strings, integers or already a `ClassLabel`.
        label_column (`str`, *optional*, defaults to `"label"`):
            The label column.
        names (`list[str]`, *optional*):
            Class names in id order; defaults to [`label_names`] of `dataset`. Give the train split's names when
            encoding an eval split, so both use the same ids.

    Returns:
        `datasets.Dataset`: the same examples with a `ClassLabel` label column.
    """
    names = list(names) if names is not None else label_names(dataset, label_column)
    feature = dataset.features[label_column]
    target = datasets.ClassLabel(names=names)
    if isinstance(feature, datasets.ClassLabel) and feature.names == names:
        return dataset
    dtype = str(getattr(feature, "dtype", ""))
    if dtype in ("string", "large_string"):
        # Arrow casts string labels to ids in place (ClassLabel.str2int), without rewriting the other columns.
        return dataset.cast_column(label_column, target)
    if dtype.startswith("int") and names == [str(i) for i in range(len(names))]:
        return dataset.cast_column(label_column, target)  # ids 0..k-1 already are the ids
    as_name = feature.int2str if isinstance(feature, datasets.ClassLabel) else str
    index = {name: i for i, name in enumerate(names)}

    def encode(batch: dict[str, list]) -> dict[str, list]:
        unknown = {as_name(value) for value in batch[label_column] if value is None or as_name(value) not in index}
        if unknown:
            raise ValueError(f"labels {sorted(map(str, unknown))} are not among the classes {names}.")
        return {label_column: [index[as_name(value)] for value in batch[label_column]]}

    features = dataset.features.copy()
    features[label_column] = target
    return dataset.map(encode, batched=True, features=features, desc="Encoding labels")


def encode_splits(
    train: datasets.Dataset, evaluation: datasets.Dataset | None, column: str
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Both splits' labels as ids of one list of names; a split without the label column (unlabelled examples, for
    distillation) is left as it is."""
    labelled = [split for split in (train, evaluation) if split is not None and column in split.column_names]
    if not labelled:
        return train, evaluation
    names = label_names(labelled[0], column)
    if len(labelled) == 2 and not isinstance(train.features[column], datasets.ClassLabel):
        # Labels only the eval split has would otherwise have no id; sort them in with the others.
        extra = set(label_names(evaluation, column)) - set(names)
        if extra:
            values = set(train.unique(column)) | set(evaluation.unique(column))
            names = [str(value) for value in sorted(value for value in values if value is not None)]

    def encode(split: datasets.Dataset | None) -> datasets.Dataset | None:
        return encode_labels(split, column, names) if split is not None and column in split.column_names else split

    return encode(train), encode(evaluation)
