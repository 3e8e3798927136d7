"""The explanation card: a student's model card (README.md) and the same facts as JSON (`explanation_card.json`).

The facts (`card_facts`) are the single source: the README is rendered from them with huggingface_hub's
`ModelCard.from_template`, its metadata (`ModelCardData` with `EvalResult`s in the model-index) included, so a push
that adds the repo id or the Space link only has to render them again.

```python
from kd_hf.card import card_facts, write_card

write_card("outputs/student", card_facts(args, student, results))
```
"""

import os
from importlib.metadata import version
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData


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
    """Whether `name` looks like a Hub repo id (`user/model` or `model`) rather than a path or an offline alias."""
    return (
        bool(name) and ":" not in name and not os.path.exists(name) and name.count("/") <= 1 and name[0] not in "./~"
    )


def card_facts(
    args, student, results: dict | None = None, steps: int | None = None, model_id: str | None = None
) -> dict:
    """What the card says about a student made by a `DistillationConfig` recipe (JSON-serialisable).

    Args:
        args (`DistillationConfig`): the recipe.
        student (`PreTrainedModel`): the distilled model.
        results (`dict`, *optional*): what `kd_hf.evaluation.evaluate_student` returned (`eval_results.json`).
        steps (`int`, *optional*): optimizer steps trained.
        model_id (`str`, *optional*): the Hub repo id, once known (defaults to `args.hub_model_id`).
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
    return {
        "kd_hf_version": version("kd-hf"),
        "model_id": model_id or args.hub_model_id,
        "space_id": args.hub_space_id,
        "task": "image-classification" if args.is_image_task else "text-classification",
        "labels": [config.id2label[i] for i in range(config.num_labels)],
        "teacher": args.teacher_model_name_or_path,
        "teachers": args.teachers,
        "teacher_revision": args.teacher_revision,
        "student": {
            "architecture": (config.architectures or [type(student).__name__])[0],
            "model_type": config.model_type,
            "num_hidden_layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "parameters": sum(p.numel() for p in student.parameters()),
        },
        "dataset": {
            "name": args.dataset_name,
            "config": args.dataset_config_name,
            "train_split": args.train_split,
            "eval_split": args.eval_split,
        },
        "recipe": recipe,
        "license": args.card_license,
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
        dataset_type=dataset["name"] or "unknown",
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
    student, teacher = facts["student"], facts["teacher"]
    task = facts["task"].replace("-", " ")
    shape = []
    if student["num_hidden_layers"] is not None:
        shape.append(f"{student['num_hidden_layers']} layers")
    if student["hidden_size"] is not None:
        shape.append(f"hidden {student['hidden_size']}")
    line = f"A {student['parameters'] / 1e6:.1f}M-parameter {student['architecture']}"
    line += f" ({', '.join(shape)})" if shape else ""
    line += f" for {task}"
    teachers = facts.get("teachers") or ([teacher] if teacher else [])
    if teachers:
        links = [f"[{name}](https://huggingface.co/{name})" if is_hub_id(name) else f"`{name}`" for name in teachers]
        line += (
            f", distilled from the teacher {links[0]}"
            if len(links) == 1
            else (
                f", distilled from {len(links)} teachers at once ({', '.join(links)}; the first one is the reference)"
            )
        )
    line += f" on {facts['dataset']['name']}, with labels {', '.join(map(str, facts['labels']))}."
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


def render_card(facts: dict, folder: str | None = None) -> ModelCard:
    """The model card (README.md) for a student's facts; `folder` is the local path shown when no repo id is known."""
    model_id = facts.get("model_id")
    teacher = facts.get("teacher")
    dataset = facts["dataset"]["name"]
    bases = [name for name in facts.get("teachers") or [teacher] if is_hub_id(name)]
    model_name = (model_id or os.path.basename(os.path.abspath(folder or "student"))).split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=[dataset] if is_hub_id(dataset) else None,
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
    models = [model_id] + ([facts["teacher"]] if is_hub_id(facts.get("teacher")) else [])
    dataset = facts.get("dataset", {}).get("name")
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
        **({"datasets": [dataset]} if is_hub_id(dataset) else {}),
        "tags": TAGS,
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n# {model_id} — teacher and student explanations\n\n"
        f"Predictions and word- or pixel-level attributions of the distilled student "
        f"[{model_id}](https://huggingface.co/{model_id}) and of its teacher, side by side, with how much they "
        "agree. Made with kd_hf.\n"
    )
