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

from ..report import global_summary, parity_tables, results_tables
from .citations import citations
from .facts import card_facts, data_facts, dataset_hub_ids, is_hub_id, model_source, recipe_fields, teacher_sources
from .text import (
    compute_lines,
    dataset_line,
    dataset_link,
    figure_counts,
    onnx_usage,
    recipe_value,
    summary,
    training_data,
    usage,
)  # fmt: skip


__all__ = [
    "CARD_FILE", "card_facts", "data_facts", "is_hub_id", "model_source", "recipe_fields", "render_card",
    "space_readme", "teacher_sources", "write_card",
]  # fmt: skip

CARD_FILE = "explanation_card.json"
TEMPLATE = Path(__file__).with_name("model_card.md")
TAGS = ["knowledge-distillation", "explainability", "kd_hf"]


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


def render_card(facts: dict, folder: str | None = None) -> ModelCard:
    """The model card (README.md) for a student's facts; `folder` is the local path shown when no repo id is known."""
    model_id = facts.get("model_id")
    teacher = facts.get("teacher")
    datasets = dataset_hub_ids(facts)
    bases = [source["hub_id"] for source in teacher_sources(facts) if source["hub_id"]]
    model_name = (model_id or os.path.basename(os.path.abspath(folder or "student"))).split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=datasets or None,
        license=facts.get("license"),
        library_name="transformers",
        pipeline_tag=facts["task"],
        tags=[*TAGS, facts["task"]],
        eval_results=_eval_results(facts),
    )
    results = facts.get("results") or {}
    explanations = results.get("explanations") or {}
    teachers = facts.get("teachers")
    recipe_rows = [("teachers" if teachers else "teacher", recipe_value(teachers or teacher))]
    recipe_rows.append(("student", facts["student"]["architecture"]))
    labels = recipe_fields(facts["recipe"].get("loss_type") or [])
    recipe_rows += [(labels.get(name, name), recipe_value(value)) for name, value in facts["recipe"].items()]
    space_id = facts.get("space_id")
    deployment = facts.get("deployment")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        summary=summary(facts),
        usage=usage(facts, model_id or folder or "path/to/student"),
        space_id=space_id,
        space_url=f"https://huggingface.co/spaces/{space_id}" if space_id else None,
        recipe_rows=recipe_rows,
        results_table=results_tables(results) if results.get("student") else None,
        dataset_line=dataset_line(facts) if results else "",
        explanation=bool(explanations),
        explanation_rows=list((explanations.get("settings") or {}).items()),
        examples=explanations.get("examples", [])[: len(facts.get("examples", [])) or 3],
        method_name=(explanations.get("settings") or {}).get("method", "attribution methods"),
        num_examples=(results.get("dataset") or {}).get("num_examples", "the"),
        global_behaviour=global_summary(results["global"]) if results.get("global") else None,
        deployment_table=parity_tables(deployment) if deployment else None,
        onnx_usage=onnx_usage(facts, model_id, folder) if deployment else None,
        onnx_files="`model.onnx` in fp32"
        + (
            ", `model_quantized.onnx` with int8 weights" if "onnx_int8" in (deployment or {}).get("models", {}) else ""
        ),
        task=facts["task"].replace("-", " "),
        labels=", ".join(map(str, facts["labels"])),
        dataset_link=dataset_link(facts["dataset"]),
        training_data=training_data(facts),
        compute=compute_lines(facts),
        figure_counts=figure_counts(results),
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
    datasets = dataset_hub_ids(facts)
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
        **({"datasets": datasets} if datasets else {}),
        "tags": TAGS,
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n# {model_id} — teacher and student explanations\n\n"
        f"Predictions and word- or pixel-level attributions of the distilled student "
        f"[{model_id}](https://huggingface.co/{model_id}) and of its teacher, side by side, with how much they "
        "agree. Made with kd_hf.\n"
    )
