"""What a student's card says, as facts (JSON-serialisable, `explanation_card.json`): gathered once, when the run that
made the student has everything at hand (the recipe, the models, the data, the machine), never guessed later."""

import json
import os
import platform
from collections import Counter
from importlib.metadata import version

import torch
from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from huggingface_hub import metadata_load

from ..data.offline import hub_equivalent, offline_model_path
from ..losses import LOSS_OPTIONS
from ..pairing import teacher_layer_indices
from ..student_init import NARROWED_WIDTHS


# Recipe fields the card reports, with the words it uses for them: the objective, then each loss's own options as its
# options class names them (`LossOptions.CARD`, in the order of `loss_type`), then the rest of the run.
_OBJECTIVE_FIELDS = {
    "teacher_weights": "teacher weights",
    "teacher_combination": "teachers combined by",
    "loss_type": "losses",
    "loss_weights": "loss weights",
    "loss_steps": "optimizer steps each loss trained for (0 = the whole run)",
    "alpha": "hard-label (cross-entropy) weight alpha",
}
_RUN_FIELDS = {
    "teacher_cache": "teacher outputs cached",
    "model_init": "student initialisation",
    "embedding_init": "student embeddings",
    "prune_vocabulary": "student vocabulary pruned to the tokens of the training and evaluation texts",
    "transfer_dataset_name": "transfer set (unlabelled texts, the teacher's soft labels)",
    "transfer_data_files": "transfer set files",
    "max_transfer_samples": "transfer texts kept (a sample)",
    "augment_copies": "augmented copies of each training text (unlabelled)",
    "peft_config": "trained through the adapter",
    "merge_adapter": "adapter merged into the weights",
    "teacher_layers": "teacher layers copied",
    "narrowed_to": "teacher layers narrowed, by the teacher's activations, to",
    "weight_averaging_steps": "final weights: the average over the last optimizer steps",
    "weight_averaging_interval": "weights averaged every n-th step",
    "learning_rate": "learning rate",
    "per_device_train_batch_size": "batch size per device",
    "gradient_accumulation_steps": "gradient accumulation steps",
    "max_length": "max tokens",
    "seed": "seed",
}


def recipe_fields(loss_type: list[str]) -> dict[str, str]:
    """The recipe fields the card may report for a run with these losses, in order, with the words it uses."""
    options = {}
    for loss in loss_type:
        options.update(LOSS_OPTIONS[loss].CARD if loss in LOSS_OPTIONS else {})
    return {**_OBJECTIVE_FIELDS, **options, **_RUN_FIELDS}


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is written like a Hub repo id (`user/model` or `model`) rather than a path or an offline alias.
    It looks at the spelling alone, never at the file system: where a model came from is `model_source`'s answer."""
    return bool(name) and ":" not in name and name.count("/") <= 1 and name[0] not in "./~" and "\\" not in name


def model_source(name: str) -> dict:
    """Where a teacher named in a recipe comes from, decided once, when the run loads it, and kept in the card.

    Returns:
        `dict`: `name` (as the recipe gives it), `hub_id` (the Hub repo a visitor can open: the name itself for a Hub
        model, the original of an `offline:` alias, None for a local folder), `folder` (a local folder's absolute
        path, which `kd-hf push` publishes; it never leaves the machine) and `base` (the Hub model a local folder was
        fine-tuned from by `kd-hf train`, if its recipe says so).
    """
    path = offline_model_path(name)
    if not os.path.isdir(path):  # the run loaded it from the Hub
        return {"name": name, "hub_id": name, "folder": None, "base": None}
    hub_id, _ = hub_equivalent(name)
    if hub_id is not None:
        return {"name": name, "hub_id": hub_id, "folder": None, "base": None}
    return {"name": name, "hub_id": None, "folder": os.path.abspath(path), "base": _base_model(path)}


def _base_model(folder: str) -> str | None:
    """The Hub id a kd_hf-trained folder started from (its recorded recipe's `model_name_or_path`), if it has one."""
    recipe = _read_json(os.path.join(folder, "kd_hf_recipe.json")) or {}
    base = recipe.get("model_name_or_path")
    if base is None:
        return None
    hub_id, _ = hub_equivalent(base)
    return hub_id or (base if is_hub_id(base) and not os.path.isdir(base) else None)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def _license_of(name: str | None, depth: int = 2) -> str | None:
    """The license in the front matter of a local (or offline) model folder's README.md, else that of the model it was
    fine-tuned from by `kd-hf train` (its recorded `model_name_or_path`), if either states one."""
    path = offline_model_path(name) if name else ""
    if not os.path.isdir(path) or depth == 0:
        return None
    readme = os.path.join(path, "README.md")
    front = metadata_load(readme) if os.path.isfile(readme) else None
    if front and front.get("license"):
        return front["license"]
    recipe = _read_json(os.path.join(path, "kd_hf_recipe.json")) or {}
    return _license_of(recipe.get("model_name_or_path"), depth - 1)


def teacher_sources(facts: dict) -> list[dict]:
    """The card's teachers as `model_source` described them; a card written before kd_hf recorded sources is read by
    the spelling of its names (a Hub id, or a local path)."""
    if facts.get("teacher_sources"):
        return facts["teacher_sources"]
    names = facts.get("teachers") or ([facts["teacher"]] if facts.get("teacher") else [])
    return [
        {"name": name, "hub_id": name if is_hub_id(name) else None, "folder": None, "base": None} for name in names
    ]


def _dataset_hub_id(name: str | None) -> tuple[str | None, str | None]:
    """`(hub_id, source)` of a dataset named in a recipe: the original's Hub id for offline data, the name itself for
    a Hub dataset, None for local files and for datasets' own builders (`csv`, `json`, `imagefolder`, ...)."""
    hub_id, source = hub_equivalent(name)
    if source is None and is_hub_id(name) and name not in _PACKAGED_DATASETS_MODULES and not os.path.exists(name):
        hub_id = name
    return hub_id, source


def dataset_facts(args) -> dict:
    """The recipe's dataset for the card: its Hub id (that of the original for offline data, None for local files)
    and, for offline data, where kd_hf read it from; and the transfer set's, when the recipe has one."""
    name = args.dataset_name
    hub_id, source = _dataset_hub_id(name)
    facts = {
        "name": name or "local files",
        "hub_id": hub_id,
        "source": source,
        "config": args.dataset_config_name,
        "train_split": args.train_split,
        "eval_split": args.eval_split,
        "report_split": args.report_split,
    }
    if args.has_transfer_set:
        transfer = args.transfer_dataset_name
        transfer_hub_id, transfer_source = _dataset_hub_id(transfer)
        facts["transfer"] = {"name": transfer or "local files", "hub_id": transfer_hub_id, "source": transfer_source}
    return facts


def dataset_hub_ids(facts: dict) -> list[str]:
    """The Hub ids of the data a student learnt from (the task's dataset, then any transfer set): the card's and the
    Space's `datasets`."""
    data = facts.get("dataset") or {}
    ids = [data.get("hub_id"), (data.get("transfer") or {}).get("hub_id")]
    return list(dict.fromkeys(hub_id for hub_id in ids if hub_id))


def data_facts(train_dataset, eval_dataset, labels: list[str]) -> dict:
    """Sizes and label balance of what the student trained on (`labels` -100: unlabelled, soft labels alone)."""

    def counts(dataset) -> dict | None:
        if dataset is None or "labels" not in dataset.column_names:
            return None
        found = Counter(int(label) for label in dataset["labels"])
        return {"labelled": {labels[i]: found.get(i, 0) for i in range(len(labels))}, "unlabelled": found.get(-100, 0)}

    return {
        "train_examples": len(train_dataset) if train_dataset is not None else None,
        "train_labels": counts(train_dataset),
        "eval_examples": len(eval_dataset) if eval_dataset is not None else None,
    }


def hardware() -> str:
    """The machine in words: the GPUs if any, else the CPU model and its cores."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1].strip() for line in file if line.startswith("model name")]
        model = names[0] if names else model
    return f"CPU ({model}), {os.cpu_count()} cores, no GPU"


def training_seconds(folder: str | None) -> float | None:
    """How long the run that wrote `folder` trained (`train_results.json`, as `kd-hf train` and `distill` write it)."""
    results = _read_json(os.path.join(folder, "train_results.json")) if folder else None
    return (results or {}).get("train_runtime")


def card_facts(
    args,
    student,
    results: dict | None = None,
    steps: int | None = None,
    model_id: str | None = None,
    data: dict | None = None,
    compute: dict | None = None,
) -> dict:
    """What the card says about a student made by a `DistillationConfig` recipe (JSON-serialisable).

    Args:
        args (`DistillationConfig`): the recipe.
        student (`PreTrainedModel`): the distilled model.
        results (`dict`, *optional*): what `kd_hf.evaluation.evaluate_student` returned (`eval_results.json`).
        steps (`int`, *optional*): optimizer steps trained.
        model_id (`str`, *optional*): the Hub repo id, once known (defaults to `args.hub_model_id`).
        data (`dict`, *optional*): `data_facts` of the training and evaluation sets.
        compute (`dict`, *optional*): `hardware`, and `student_seconds` / `report_seconds` of this run.
    """
    fields = recipe_fields(args.loss_type)
    shown = {"loss_type", "loss_weights", "alpha", "teacher_cache", "model_init", "learning_rate", "seed"}
    shown |= {"per_device_train_batch_size", "gradient_accumulation_steps"}
    shown |= fields.keys() - _OBJECTIVE_FIELDS.keys() - _RUN_FIELDS.keys()
    if args.model_init == "teacher_layers":
        shown.add("teacher_layers")
    if args.embedding_init != "random":
        shown.add("embedding_init")
    if any(args.loss_steps):
        shown.add("loss_steps")
    shown |= {name for name in ("prune_vocabulary", "augment_copies") if getattr(args, name)}
    shown |= {name for name in ("transfer_dataset_name", "transfer_data_files") if getattr(args, name)}
    if args.has_transfer_set and args.max_transfer_samples:
        shown.add("max_transfer_samples")
    if args.weight_averaging_steps:
        shown |= {"weight_averaging_steps", "weight_averaging_interval"}
    if args.teachers:
        shown |= {"teacher_weights", "teacher_combination"}
    if args.peft_config:
        shown |= {"peft_config", "merge_adapter"}
    if not args.is_image_task:
        shown.add("max_length")
    values = {name: getattr(args, name) for name in fields if name in shown}
    if args.model_init == "teacher_layers":
        # A stride picked one teacher layer per student layer: those of a teacher `stride * depth` deep.
        stride, depth = args.teacher_layers_stride, student.config.num_hidden_layers
        values["teacher_layers"] = args.teacher_layers or teacher_layer_indices(stride * depth, stride)
        narrowed = [name for name in NARROWED_WIDTHS if name in (args.model_config or {})]
        if narrowed:
            values["narrowed_to"] = ", ".join(f"{name} {getattr(student.config, name)}" for name in narrowed)
    recipe = {name: values[name] for name in fields if name in values}
    recipe["steps"] = steps
    explanations = (results or {}).get("explanations") or {}
    examples = []
    for example in explanations.get("examples", [])[: args.card_examples]:
        examples.append({"text": example["text"]} if example.get("text") else {"image": example.get("input_png")})
    config = student.config
    sources = [model_source(name) for name in args.teachers or [args.teacher_model_name_or_path] if name]
    compute = {"hardware": hardware(), **(compute or {})}
    if sources:
        compute["teacher_seconds"] = training_seconds(sources[0]["folder"])
    return {
        "kd_hf_version": version("kd-hf"),
        "model_id": model_id or args.hub_model_id,
        "space_id": args.hub_space_id,
        "task": "image-classification" if args.is_image_task else "text-classification",
        "labels": [config.id2label[i] for i in range(config.num_labels)],
        "teacher": args.teacher_model_name_or_path,
        "teachers": args.teachers,
        "teacher_revision": args.teacher_revision,
        "teacher_sources": sources,
        "student": {
            "architecture": (config.architectures or [type(student).__name__])[0],
            "model_type": config.model_type,
            "num_hidden_layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "parameters": sum(p.numel() for p in student.parameters()),
        },
        "dataset": dataset_facts(args),
        "data": data,
        "compute": compute,
        "recipe": recipe,
        "license": args.card_license or _license_of(args.teacher_model_name_or_path) or "unknown",
        "results": results,
        "examples": examples,
    }
