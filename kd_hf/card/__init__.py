"""The explanation card: a student's model card (README.md) and the same facts as JSON (`explanation_card.json`).

The facts (`card_facts`) are the single source: the README is rendered from them with huggingface_hub's
`ModelCard.from_template`, its metadata (`ModelCardData` with `EvalResult`s in the model-index) included, so a push
that adds the repo id or the Space link only has to render them again.

```python
from kd_hf.card import card_facts, write_card

write_card("outputs/student", card_facts(args, student, results))
```
"""

import json
import os
import platform
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.offline import hub_equivalent, offline_model_path
from .citations import citations


CARD_FILE = "explanation_card.json"
TEMPLATE = Path(__file__).with_name("model_card.md")
TAGS = ["knowledge-distillation", "explainability", "kd_hf"]

# Recipe fields the card reports, with the words it uses for them.
RECIPE_FIELDS = {
    "teacher_weights": "teacher weights",
    "teacher_combination": "teachers combined by",
    "loss_type": "losses",
    "loss_weights": "loss weights",
    "alpha": "hard-label (cross-entropy) weight alpha",
    "temperature": "temperature",
    "divergence": "soft-label divergence",
    "layer_map": "layer map (student -> teacher)",
    "attention_loss": "attention loss",
    "attention_heads": "attention heads",
    "hidden_state_loss": "hidden-state loss",
    "attribution_loss": "attribution loss",
    "attribution_method": "attribution matched",
    "attribution_n_steps": "integration steps of the matched attribution",
    "attribution_every": "attribution loss every N steps",
    "attribution_batch_size": "examples per batch whose attributions are matched",
    "teacher_cache": "teacher outputs cached",
    "model_init": "student initialisation",
    "embedding_init": "student embeddings",
    "prune_vocabulary": "student vocabulary pruned to the training texts' tokens",
    "transfer_dataset_name": "transfer set (unlabelled texts, the teacher's soft labels)",
    "transfer_data_files": "transfer set files",
    "augment_copies": "augmented copies of each training text (unlabelled)",
    "peft_config": "trained through the adapter",
    "merge_adapter": "adapter merged into the weights",
    "teacher_layers": "teacher layers copied",
    "learning_rate": "learning rate",
    "per_device_train_batch_size": "batch size per device",
    "gradient_accumulation_steps": "gradient accumulation steps",
    "max_length": "max tokens",
    "seed": "seed",
}
# Which recipe fields matter depends on the losses in use.
_LOSS_FIELDS = {
    "soft_label": ("temperature", "divergence"),
    "attention": ("layer_map", "attention_loss", "attention_heads"),
    "hidden_state": ("layer_map", "hidden_state_loss"),
    "attribution": (
        "attribution_loss",
        "attribution_method",
        "attribution_n_steps",
        "attribution_every",
        "attribution_batch_size",
    ),
}


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
    text = Path(readme).read_text(encoding="utf-8") if os.path.isfile(readme) else ""
    front = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    if isinstance(front, dict) and front.get("license"):
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


def dataset_facts(args) -> dict:
    """The recipe's dataset for the card: its Hub id (that of the original for offline data, None for local files)
    and, for offline data, where kd_hf read it from."""
    name = args.dataset_name
    hub_id, source = hub_equivalent(name)
    if source is None and name and is_hub_id(name) and not os.path.exists(name):
        hub_id = name
    return {
        "name": name or "local files",
        "hub_id": hub_id,
        "source": source,
        "config": args.dataset_config_name,
        "train_split": args.train_split,
        "eval_split": args.eval_split,
        "report_split": args.report_split,
    }


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
    shown = {"loss_type", "loss_weights", "alpha", "teacher_cache", "model_init", "learning_rate", "seed"}
    shown |= {"per_device_train_batch_size", "gradient_accumulation_steps"}
    for loss in args.loss_type:
        shown.update(_LOSS_FIELDS.get(loss, ()))
    if args.model_init == "teacher_layers":
        shown.add("teacher_layers")
    if args.embedding_init != "random":
        shown.add("embedding_init")
    shown |= {name for name in ("prune_vocabulary", "augment_copies") if getattr(args, name)}
    shown |= {name for name in ("transfer_dataset_name", "transfer_data_files") if getattr(args, name)}
    if args.teachers:
        shown |= {"teacher_weights", "teacher_combination"}
    if args.peft_config:
        shown |= {"peft_config", "merge_adapter"}
    if not args.is_image_task:
        shown.add("max_length")
    recipe = {name: getattr(args, name) for name in RECIPE_FIELDS if name in shown}
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


def _eval_results(facts: dict) -> list[EvalResult] | None:
    results = facts.get("results")
    if not results:
        return None
    dataset = facts["dataset"]
    common = dict(
        task_type=facts["task"],
        dataset_type=dataset.get("hub_id") or dataset["name"] or "unknown",
        dataset_name=dataset["name"] or "unknown",
        dataset_config=dataset["config"],
        dataset_split=results["dataset"]["split"],
    )
    student = results["student"]
    metrics = [
        ("accuracy", "Accuracy", student.get("accuracy")),
        ("f1", "Macro-F1", student.get("macro_f1")),
        ("top1_agreement", "Top-1 agreement with the teacher", student.get("top1_agreement")),
        ("predictive_kl", "KL(teacher || student)", student.get("predictive_kl")),
    ]
    explanations = results.get("explanations")
    if explanations:
        for name, value in explanations["agreement"].items():
            metrics.append((f"explanation_{name}", f"Explanation agreement ({name})", value["mean"]))
        for name in ("comprehensiveness", "sufficiency"):
            metrics.append((name, f"Student {name} (AOPC)", explanations["faithfulness"]["student"][name]["mean"]))
    return [
        EvalResult(metric_type=kind, metric_name=name, metric_value=round(value, 4), **common)
        for kind, name, value in metrics
        if value is not None and value == value  # NaN (an undefined rank correlation) is not a result
    ]


def _summary(facts: dict) -> str:
    student = facts["student"]
    task = facts["task"].replace("-", " ")
    shape = []
    if student["num_hidden_layers"] is not None:
        shape.append(f"{student['num_hidden_layers']} layers")
    if student["hidden_size"] is not None:
        shape.append(f"hidden {student['hidden_size']}")
    line = f"A {student['parameters'] / 1e6:.1f}M-parameter {student['architecture']}"
    line += f" ({', '.join(shape)})" if shape else ""
    line += f" for {task}"
    teachers = teacher_sources(facts)
    if teachers:
        links = [
            f"[{source['hub_id']}](https://huggingface.co/{source['hub_id']})"
            if source["hub_id"]
            else f"`{os.path.basename(source['name'].rstrip('/'))}` (a local model, not published)"
            for source in teachers
        ]
        line += (
            f", distilled from the teacher {links[0]}"
            if len(links) == 1
            else (
                f", distilled from {len(links)} teachers at once ({', '.join(links)}; the first one is the reference)"
            )
        )
    line += f" on {_dataset_link(facts['dataset'])}, with labels {', '.join(map(str, facts['labels']))}."
    results = facts.get("results") or {}
    if results.get("teacher"):
        s, t = results["student"], results["teacher"]
        line += (
            f" It is {s['compression']:.1f}× smaller and {s['speedup']['batch_1']:.1f}× faster on CPU (batch 1) "
            f"than its teacher, keeps {s['accuracy'] / t['accuracy']:.0%} of its accuracy "
            f"({s['accuracy']:.3f} vs {t['accuracy']:.3f}) and predicts its class {s['top1_agreement']:.0%} of the time."
        )
        explanations = results.get("explanations")
        rho = explanations and explanations["agreement"]["spearman"]
        if rho and rho["mean"] is not None and rho["mean"] == rho["mean"]:  # None or NaN: undefined for every example
            overlap = explanations["agreement"]["top_k_overlap"]
            line += (
                f" Its explanations agree with the teacher's with Spearman ρ = {rho['mean']:.2f} (0 by chance); "
                f"their top-20% features overlap {overlap['mean']:.2f} ({overlap['random']:.2f} by chance)."
            )
            method = explanations["settings"]["method"].replace("_", " ")
            trained = explanations.get("trained_method")
            trained_rho = trained and trained["agreement"]["spearman"]["mean"]
            if trained_rho is not None and trained_rho == trained_rho:
                line += (
                    f" It was trained to match the teacher's {trained['method'].replace('_', ' ')} attributions, by "
                    f"which the agreement is ρ = {trained_rho:.2f}; the figures above judge it by {method}."
                )
    return line


def _dataset_link(dataset: dict) -> str:
    hub_id = dataset.get("hub_id")
    return f"[{hub_id}](https://huggingface.co/datasets/{hub_id})" if hub_id else f"`{dataset['name']}`"


def _usage(facts: dict, where: str) -> str:
    if facts["task"] == "image-classification":
        return (
            "from PIL import Image\nfrom transformers import pipeline\n\n"
            f'classifier = pipeline("image-classification", model="{where}")\n'
            'print(classifier(Image.new("RGB", (28, 28))))'
        )
    example = facts["examples"][0]["text"] if facts.get("examples") else "a quiet triumph"
    return (
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f'model = AutoModelForSequenceClassification.from_pretrained("{where}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        f'inputs = tokenizer({example!r}, return_tensors="pt")\n'
        "probabilities = model(**inputs).logits.softmax(-1)[0]\n"
        "print({model.config.id2label[i]: round(p.item(), 3) for i, p in enumerate(probabilities)})"
    )


def _format(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "–" if value is None else str(value)


def _dataset_line(facts: dict) -> str:
    """Where the results come from, and whether that split was held out of training and of its evaluations."""
    split, evaluated = facts["results"]["dataset"]["split"], facts["dataset"].get("eval_split")
    provenance = (
        "the split training evaluated on, so not held out"
        if split == evaluated
        else f"held out: neither trained on nor evaluated on during training (that was `{evaluated}`)"
    )
    return (
        f"On {facts['dataset']['name']}, split `{split}` ({facts['results']['dataset']['num_examples']} examples; "
        f"{provenance}):"
    )


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min"


def _training_data(facts: dict) -> list[str]:
    """The *Training data* bullets: source, sizes, label balance, which split is held out."""
    dataset, data = facts["dataset"], facts.get("data") or {}
    lines = [
        f"Dataset: {_dataset_link(dataset)}" + (f", config `{dataset['config']}`" if dataset.get("config") else "")
    ]
    if dataset.get("source"):
        lines[0] += f"; read offline from {dataset['source']} (`{dataset['name']}`), not downloaded from the Hub"
    split = dataset.get("train_split", "train")
    train = data.get("train_labels")
    if data.get("train_examples") is not None:
        line = f"Trained on split `{split}`: {data['train_examples']:,} examples"
        if train:
            labelled = sum(train["labelled"].values())
            balance = ", ".join(f"{label} {count:,} ({count / max(labelled, 1):.0%})" for label, count in
                                train["labelled"].items())  # fmt: skip
            line += f"; {labelled:,} labelled ({balance})"
            if train["unlabelled"]:
                line += f" and {train['unlabelled']:,} unlabelled, which learn from the teacher's soft labels alone"
        lines.append(line)
    if data.get("eval_examples") is not None:
        lines.append(
            f"Evaluated during training on split `{dataset['eval_split']}`: {data['eval_examples']:,} examples"
        )
    results = (facts.get("results") or {}).get("dataset")
    if results:
        held_out = results["split"] != dataset.get("eval_split")
        lines.append(
            f"Reported on split `{results['split']}`: {results['num_examples']:,} examples, "
            + ("held out of training and of its evaluations" if held_out else "the split training evaluated on")
        )
    return lines


def _compute(facts: dict) -> list[str]:
    compute = facts.get("compute") or {}
    if not compute:
        return []
    return [
        f"Hardware: {compute.get('hardware', 'not recorded')}",
        f"Teacher fine-tuning: {_minutes(compute.get('teacher_seconds'))}"
        + ("" if compute.get("teacher_seconds") is not None else " (the teacher was not trained by this kd_hf run)"),
        f"Student distillation: {_minutes(compute.get('student_seconds'))}",
        f"Evaluation report (accuracy, agreement, explanations, speed): {_minutes(compute.get('report_seconds'))}",
    ]


def _figure_counts(results: dict) -> list[str]:
    """How many examples each kind of figure comes from, for the limitations."""
    counts = []
    if results.get("dataset"):
        counts.append(f"accuracy, agreement and KL: {results['dataset']['num_examples']:,} examples")
    explanations = results.get("explanations") or {}
    if explanations.get("num_examples"):
        counts.append(f"explanation agreement and faithfulness: {explanations['num_examples']:,} examples")
    if (results.get("global") or {}).get("num_examples"):
        counts.append(f"global behaviour: {results['global']['num_examples']:,} examples")
    return counts


def render_card(facts: dict, folder: str | None = None) -> ModelCard:
    """The model card (README.md) for a student's facts; `folder` is the local path shown when no repo id is known."""
    model_id = facts.get("model_id")
    teacher = facts.get("teacher")
    dataset = facts["dataset"].get("hub_id")
    bases = [source["hub_id"] for source in teacher_sources(facts) if source["hub_id"]]
    model_name = (model_id or os.path.basename(os.path.abspath(folder or "student"))).split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=[dataset] if dataset else None,
        license=facts.get("license"),
        library_name="transformers",
        pipeline_tag=facts["task"],
        tags=[*TAGS, facts["task"]],
        eval_results=_eval_results(facts),
    )
    results = facts.get("results") or {}
    explanations = results.get("explanations") or {}
    teachers = facts.get("teachers")
    recipe_rows = [("teachers" if teachers else "teacher", _format(teachers or teacher))]
    recipe_rows.append(("student", facts["student"]["architecture"]))
    recipe_rows += [(RECIPE_FIELDS.get(name, name), _format(value)) for name, value in facts["recipe"].items()]
    space_id = facts.get("space_id")
    from ..evaluation import results_tables
    from ..interpret import global_summary

    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        summary=_summary(facts),
        usage=_usage(facts, model_id or folder or "path/to/student"),
        space_id=space_id,
        space_url=f"https://huggingface.co/spaces/{space_id}" if space_id else None,
        recipe_rows=recipe_rows,
        results_table=results_tables(results) if results.get("student") else None,
        dataset_line=_dataset_line(facts) if results else "",
        explanation=bool(explanations),
        explanation_rows=list((explanations.get("settings") or {}).items()),
        examples=explanations.get("examples", [])[: len(facts.get("examples", [])) or 3],
        method_name=(explanations.get("settings") or {}).get("method", "attribution methods"),
        num_examples=(results.get("dataset") or {}).get("num_examples", "the"),
        global_behaviour=global_summary(results["global"]) if results.get("global") else None,
        task=facts["task"].replace("-", " "),
        labels=", ".join(map(str, facts["labels"])),
        dataset_link=_dataset_link(facts["dataset"]),
        training_data=_training_data(facts),
        compute=_compute(facts),
        figure_counts=_figure_counts(results),
        citations=citations(
            list(facts["recipe"].get("loss_type") or []),
            facts["dataset"].get("hub_id"),
            [name for source in teacher_sources(facts) for name in (source["hub_id"], source.get("base"))],
        ),
    )


def write_card(folder: str, facts: dict) -> str:
    """Write `README.md` (the rendered card) and `explanation_card.json` into `folder`; return the README path. Both
    are rendered first and written whole, the JSON strict (`null` where `eval_results.json` has it, not NaN)."""
    from ..explain.report import strict_json, write_atomically

    card, path = str(render_card(facts, folder)), os.path.join(folder, "README.md")
    write_atomically(os.path.join(folder, CARD_FILE), strict_json(facts))
    write_atomically(path, card)
    return path


def space_readme(model_id: str, facts: dict) -> str:
    """The Space's README: front matter that makes it a Gradio Space linked to the student (and its teacher)."""
    models = [model_id] + [source["hub_id"] for source in teacher_sources(facts) if source["hub_id"]]
    dataset = facts.get("dataset", {}).get("hub_id")
    metadata = {
        "title": f"{model_id.split('/')[-1]} explanations",
        "emoji": "🔍",
        "colorFrom": "green",
        "colorTo": "blue",
        "sdk": "gradio",
        "sdk_version": version("gradio"),
        "app_file": "app.py",
        "pinned": False,
        "models": models,
        **({"datasets": [dataset]} if dataset else {}),
        "tags": TAGS,
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n# {model_id} — teacher and student explanations\n\n"
        f"Predictions and word- or pixel-level attributions of the distilled student "
        f"[{model_id}](https://huggingface.co/{model_id}) and of its teacher, side by side, with how much they "
        "agree. Made with kd_hf.\n"
    )
