"""What an export is measured on: the data and the teacher that the student's own run reported on.

A student folder written by `kd-hf distill` records its recipe (`kd_hf_recipe.json`: dataset, columns, splits, seed)
and its report (`eval_results.json`: the split the card's figures come from). The export's parity figures are
measured on that same split, read through the same `kd_hf.data.load_raw_datasets`, and against the same teacher.

```python
from kd_hf.export.data import evaluation_config

config = evaluation_config("outputs/student", max_examples=500)
config.dataset_name, config.eval_split  # ('offline:rotten_tomatoes', 'test')
```
"""

import dataclasses
import json
import os

from torch.utils.data import DataLoader

from ..card import CARD_FILE
from ..checkpoints import RECIPE_NAME
from ..config import DataOptions, DistillationConfig
from ..data import offline_model_path, split_names
from ..evaluation import RESULTS_FILE, processed_split
from .exporter import is_image_folder


# The recipe fields that say what the student was evaluated on (a transfer set and augmentation only add training
# texts), and the seed, which draws the held-out split and the `max_eval_samples` sample.
_DATA_FIELDS = {f.name for f in dataclasses.fields(DataOptions)} - {
    "transfer_dataset_name", "transfer_data_files", "transfer_split", "max_transfer_samples", "augment_copies",
    "augment_word_prob", "augment_mask_prob", "max_train_samples", "max_eval_samples",
} | {"seed", "label_mapping"}  # fmt: skip


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as file:
        return json.load(file)


def _reported_split(folder: str, dataset_name: str | None) -> str | None:
    """The split of the student's report (`eval_results.json`), when it was made on the recipe's dataset."""
    reported = _read_json(os.path.join(folder, RESULTS_FILE)).get("dataset") or {}
    if reported.get("split") and reported.get("name") == dataset_name:
        return reported["split"]
    return None


def evaluation_config(
    folder: str, dataset_name: str | None = None, eval_split: str | None = None, max_examples: int | None = None
) -> DistillationConfig:
    """A config whose data fields name what to measure the export of `folder` on.

    Args:
        folder (`str`): the student folder.
        dataset_name (`str`, *optional*): another dataset than the recipe's (its columns are the recipe's; without
            a recipe, `text` or `image`, and `label`).
        eval_split (`str`, *optional*): the split; defaults to the one the student's report used.
        max_examples (`int`, *optional*): a seeded random sample of the split this big.

    Raises:
        `FileNotFoundError`: `folder` is not a folder; `ValueError`: no recipe in it and no `dataset_name`.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder; export a model saved locally with `save_pretrained`.")
    recipe = _read_json(os.path.join(folder, RECIPE_NAME))
    if not recipe and dataset_name is None:
        raise ValueError(
            f"{folder} has no {RECIPE_NAME} to say what it was evaluated on (a model kd_hf did not train); pass the "
            "data to measure the export on: `--dataset offline:rotten_tomatoes` (and `--eval-split`)."
        )
    fields = {key: value for key, value in recipe.items() if key in _DATA_FIELDS}
    if dataset_name is not None and dataset_name != fields.get("dataset_name"):
        fields.update(dataset_name=dataset_name, dataset_config_name=None, data_files=None)
    if not recipe and is_image_folder(folder):
        fields["image_column"] = "image"  # the column of the offline image corpora and of `imagefolder` datasets
    config = DistillationConfig(output_dir=folder, report_to=[], max_eval_samples=max_examples, **fields)
    if eval_split is None:
        eval_split = _reported_split(folder, config.dataset_name)
    # else the recipe's `report_split` where the dataset has it, as `kd-hf distill` chose; else its `eval_split`
    if eval_split is None and config.report_split not in (None, config.eval_split):
        eval_split = config.report_split if config.report_split in split_names(config) else None
    config.eval_split = eval_split or config.eval_split
    return config


def default_teacher(folder: str) -> str | None:
    """The teacher the student was distilled from, as its card (or recipe) names it: the name if it loads from here,
    else the folder or Hub repo the card recorded for it; `None` for several teachers, or none."""
    card = _read_json(os.path.join(folder, CARD_FILE))
    recipe = _read_json(os.path.join(folder, RECIPE_NAME))
    sources = card.get("teacher_sources") or []
    if card.get("teachers") or recipe.get("teachers") or len(sources) > 1:
        return None
    name = card.get("teacher") or recipe.get("teacher_model_name_or_path")
    source = sources[0] if sources else {}
    for candidate in (name, source.get("folder")):
        if candidate and os.path.isdir(offline_model_path(candidate)):
            return candidate
    return source.get("hub_id") or name


def evaluation_loader(config, evaluation, student, processor, teacher=None, teacher_processor=None):
    """The raw split preprocessed for the student (and the teacher's own inputs where it needs them), as
    `kd-hf eval` prepares it, and a function making loaders of it at a batch size."""
    processed, collator = processed_split(config, evaluation, student, teacher, processor, teacher_processor)
    return processed, lambda size: DataLoader(processed, batch_size=size, collate_fn=collator)
