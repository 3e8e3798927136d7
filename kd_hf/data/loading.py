"""
From the data fields of a `DistillationConfig` to train and eval datasets ready for the trainer.

Columns and splits are checked right after loading, before labels are encoded or anything is tokenised, so that a
typo in a recipe fails in seconds with the names that do exist.
"""

import os
import re
from types import SimpleNamespace
from typing import Any

import datasets
from transformers.utils import logging

from .augment import UNLABELLED
from .labels import check_columns, encode_splits
from .offline import OFFLINE_PREFIX, load_offline_dataset
from .text import tokenize_for_pair
from .vision import preprocess_images


logger = logging.get_logger(__name__)

# The eval split whose absence means "hold some of train out"; any other eval split must exist.
HELD_OUT_SPLIT = "validation"
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_BUILDERS |= {".arrow": "arrow", ".txt": "text"}
_BUILDERS |= dict.fromkeys((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"), "imagefolder")


def _first_file(data_files: Any) -> str:
    while isinstance(data_files, (dict, list, tuple)):
        data_files = next(iter(data_files.values() if isinstance(data_files, dict) else data_files))
    return str(data_files)


def _builder_for(data_files: Any) -> tuple[str, dict]:
    path = _first_file(data_files).lower()
    for compression in _COMPRESSIONS:
        path = path.removesuffix(compression)
    extension = os.path.splitext(path)[1]
    if extension not in _BUILDERS:
        raise ValueError(
            f"Cannot tell the format of {_first_file(data_files)!r} from its extension ({sorted(_BUILDERS)} are "
            "known); set `dataset_name` to the datasets builder (`csv`, `json`, `parquet`, `imagefolder`, ...)."
        )
    return _BUILDERS[extension], {"delimiter": "\t"} if extension == ".tsv" else {}


def _load_dict(args: Any) -> datasets.DatasetDict:
    if args.dataset_name and args.dataset_name.startswith(OFFLINE_PREFIX):
        return load_offline_dataset(args.dataset_name[len(OFFLINE_PREFIX) :])
    if args.dataset_name:
        kwargs = {}
        if args.data_files and args.dataset_name == "csv" and _first_file(args.data_files).endswith(".tsv"):
            kwargs = {"delimiter": "\t"}  # the csv builder would otherwise read each tab-separated row as one column
        return datasets.load_dataset(args.dataset_name, args.dataset_config_name, data_files=args.data_files, **kwargs)
    if args.data_files:
        builder, kwargs = _builder_for(args.data_files)
        return datasets.load_dataset(builder, data_files=args.data_files, **kwargs)
    raise ValueError(
        "No data: set `dataset_name` (a Hub id, a builder such as `csv`, or `offline:rotten_tomatoes`) or "
        "`data_files` (e.g. `{train: train.csv, validation: dev.csv}`) in the recipe."
    )


def add_transfer_set(train: datasets.Dataset, args: Any) -> datasets.Dataset:
    """`train` followed by the recipe's transfer set: the `transfer_split` of `transfer_dataset_name` (or
    `transfer_data_files`), its `text_columns` alone, rows with an empty text dropped, at most `max_transfer_samples`
    of them, labelled -100 (no label: the student learns the teacher's soft labels on them). Other columns of `train`
    are dropped."""
    source = SimpleNamespace(
        dataset_name=args.transfer_dataset_name, dataset_config_name=None, data_files=args.transfer_data_files
    )
    splits = _load_dict(source)
    name = args.transfer_dataset_name or _first_file(args.transfer_data_files)
    if args.transfer_split not in splits:
        raise ValueError(
            f"split {args.transfer_split!r} not in the transfer set {name!r} (splits: {', '.join(splits)}); set "
            "`transfer_split`."
        )
    transfer = splits[args.transfer_split]
    missing = [column for column in args.text_columns if column not in transfer.column_names]
    if missing:
        raise ValueError(
            f"The transfer set {name!r} has no column {missing} (columns: {', '.join(transfer.column_names)}); it is "
            "read through the recipe's `text_columns`: rename its text column to match."
        )
    columns = list(args.text_columns)
    transfer = transfer.select_columns(columns).filter(
        lambda row: all(row[column] for column in columns), desc="Dropping empty transfer texts"
    )
    # One sample for every seed: runs then share the teacher's soft labels on it (`teacher_cache`).
    transfer = _subsample(transfer, args.max_transfer_samples, seed=0)
    if args.label_column in train.column_names:
        columns.append(args.label_column)
        train = train.cast_column(args.label_column, datasets.Value("int64"))
        transfer = transfer.add_column(args.label_column, [UNLABELLED] * transfer.num_rows)
    train = train.select_columns(columns)
    logger.info(f"Training on {train.num_rows} examples and {transfer.num_rows} unlabelled ones of {name!r}.")
    return datasets.concatenate_datasets([train, transfer.cast(train.features)])


def split_names(args: Any) -> list[str]:
    """The splits of the dataset a recipe names (loading it, from the cache after the first time)."""
    return list(_load_dict(args))


def _hold_out(train: datasets.Dataset, args: Any) -> tuple[datasets.Dataset, datasets.Dataset]:
    try:
        split = train.train_test_split(
            test_size=args.eval_split_size, seed=args.seed, stratify_by_column=args.label_column
        )
    except ValueError:  # a class too rare to appear on both sides: fall back to a plain random split
        split = train.train_test_split(test_size=args.eval_split_size, seed=args.seed)
    return split["train"], split["test"]


def _subsample(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    if max_samples is None or max_samples >= dataset.num_rows:
        return dataset
    # Shuffle first: files are often sorted by label, and a head would then hold one class.
    return dataset.shuffle(seed=seed).select(range(max_samples))


def load_raw_datasets(args: Any) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """
    Loads the train and eval splits named by a recipe, with labels encoded as `ClassLabel`.

    The eval set is `args.eval_split`; a dataset without a `validation` split, when that is the split asked for, has
    `args.eval_split_size` of the train split held out instead (stratified by label, seeded with `args.seed`), and
    any other missing or empty split is an error. `eval_split=None` means no eval set. `max_train_samples` and
    `max_eval_samples` then keep a seeded random sample.

    Args:
        args (`DistillationConfig`):
            Reads `dataset_name`, `dataset_config_name`, `data_files`, `text_columns`, `image_column`,
            `label_column`, `train_split`, `eval_split`, `eval_split_size`, `max_train_samples`,
            `max_eval_samples` and `seed`.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset | None]`: the raw train and eval splits; both label columns use the
        ids of [`label_names`] of the train split. With a teacher, a split may have no label column (unlabelled
        examples) when `label_column` keeps its default; empty label cells are refused.
    """
    try:
        splits = _load_dict(args)
    except ValueError as error:  # datasets refuses to build a split with no rows
        empty = re.match(r'Instruction "(.+)" corresponds to no data', str(error))
        if empty is None:
            raise
        files = args.data_files.get(empty[1]) if isinstance(args.data_files, dict) else args.data_files
        where = f" ({files})" if files else ""
        raise ValueError(f"split {empty[1]!r} has no examples (0 rows); check its data files{where}.") from None
    if args.train_split not in splits:
        raise ValueError(
            f"split {args.train_split!r} not in the dataset (splits: {', '.join(splits)}); "
            "set `train_split` in the recipe."
        )
    train = splits[args.train_split]
    evaluation = None
    if args.eval_split is not None and args.eval_split in splits:
        evaluation = splits[args.eval_split]
    elif args.eval_split not in (None, HELD_OUT_SPLIT):
        # Evaluating a slice of train instead would report it under the name of a split that does not exist.
        raise ValueError(
            f"split {args.eval_split!r} not in the dataset (splits: {', '.join(splits)}); set `eval_split` in the "
            "recipe, or `--split` for `kd-hf eval` and `kd-hf explain`."
        )
    for name, dataset in ((args.train_split, train), (args.eval_split, evaluation)):
        if dataset is not None and dataset.num_rows == 0:
            raise ValueError(
                f"split {name!r} has no examples (0 rows; splits: {', '.join(splits)}); check its data, or name "
                "another split (`train_split` / `eval_split` in the recipe, `--split` for `kd-hf eval`)."
            )
        if dataset is not None:
            check_columns(dataset, args, name)

    train, evaluation = encode_splits(train, evaluation, args.label_column)
    if evaluation is None and args.eval_split is not None:
        logger.info(
            f"No {args.eval_split!r} split (splits: {', '.join(splits)}); holding out {args.eval_split_size:.0%} "
            f"of {args.train_split!r} for evaluation."
        )
        train, evaluation = _hold_out(train, args)

    train = _subsample(train, args.max_train_samples, args.seed)
    if evaluation is not None:
        evaluation = _subsample(evaluation, args.max_eval_samples, args.seed)
    return train, evaluation


def prepare_datasets(
    args: Any,
    processor: Any,
    teacher_processor: Any | None = None,
    num_channels: int = 3,
    teacher_num_channels: int | None = None,
    raw_datasets: tuple[datasets.Dataset, datasets.Dataset | None] | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """
    Loads a recipe's data and turns both splits into model inputs for the student (and the teacher, if it needs
    its own): tokens for text, `pixel_values` when `args.is_image_task`.

    Args:
        args (`DistillationConfig`):
            The recipe; see [`load_raw_datasets`] for the fields read, plus `max_length` for text.
        processor (`PreTrainedTokenizerBase` or `BaseImageProcessor`):
            The student's tokenizer or image processor.
        teacher_processor (`PreTrainedTokenizerBase` or `BaseImageProcessor`, *optional*):
            The teacher's; extra `teacher_*` columns are made only when it differs from the student's.
        num_channels (`int`, *optional*, defaults to 3):
            Image channels the student expects (image tasks only).
        teacher_num_channels (`int`, *optional*):
            Image channels the teacher expects; defaults to `num_channels`.
        raw_datasets (`tuple[datasets.Dataset, datasets.Dataset | None]`, *optional*):
            What [`load_raw_datasets`] returned, when the caller already loaded it (e.g. to read the label names).

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset | None]`: train and eval inputs with a `ClassLabel` `labels`
        column, so `label_names(train_dataset)` gives the class names in id order.
    """
    train, evaluation = raw_datasets if raw_datasets is not None else load_raw_datasets(args)

    def process(dataset: datasets.Dataset) -> datasets.Dataset:
        if args.is_image_task:
            return preprocess_images(
                dataset,
                processor,
                teacher_processor,
                image_column=args.image_column,
                label_column=args.label_column,
                num_channels=num_channels,
                teacher_num_channels=teacher_num_channels,
            )
        return tokenize_for_pair(
            dataset,
            processor,
            teacher_processor,
            text_columns=args.text_columns,
            label_column=args.label_column,
            max_length=args.max_length,
        )

    return process(train), process(evaluation) if evaluation is not None else None
