"""`kd-hf eval`: a student and its teacher side by side, on task quality, fidelity, explanations, size and speed.

```python
from kd_hf.evaluation import evaluate_student

results = evaluate_student("outputs/student", "outputs/teacher", "offline:rotten_tomatoes", output_dir="eval")
results["student"]["top1_agreement"], results["explanations"]["agreement"]["spearman"]["mean"]
```

Writes `eval_results.json` (everything), `eval_report.md` (the tables), `confusion_matrix.png` (`results.py`), and
the explanation report of `kd_hf.explain.report` (`explanation_report.html`, `explanations/*.png` with the deletion
curves; `explanations.py`).
"""

import logging
import os

import numpy as np
import torch
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import EvalPrediction, PreTrainedModel, default_data_collator

from ..config import DistillationConfig
from ..data import DistillationDataCollator, load_raw_datasets, model_inputs, preprocess_images, tokenize_for_pair
from ..ensemble import EnsembleTeacher
from ..metrics import classification_metrics, predictive_kl, top1_agreement
from ..metrics.efficiency import (
    count_parameters,
    forward_runner,
    median_latencies,
    median_latency_ms,
    size_on_disk_mb,
)
from ..models import load_model, load_processor
from ..pairing import align_labels
from .explanations import compare_on_examples, explain_sample, explanation_settings
from .results import REPORT_FILE, RESULTS_FILE, plot_confusion_matrices, read_results, write_results


__all__ = [
    "REPORT_FILE", "RESULTS_FILE", "count_parameters", "evaluate_student", "explain_sample", "explanation_settings",
    "median_latency_ms", "predict", "processed_split", "read_results", "size_on_disk_mb", "write_results",
]  # fmt: skip

logger = logging.getLogger(__name__)

LATENCY_BATCH_SIZES = (1, 32)


@torch.inference_mode()
def _inputs(batch: dict, teacher: bool) -> dict:
    """A model's own inputs: the teacher's `teacher_*` ones where the two models tokenize differently."""
    return (teacher and model_inputs(batch, teacher=True)) or model_inputs(batch)


@torch.inference_mode()
def predict(model: PreTrainedModel, loader: DataLoader, teacher: bool = False, desc: str = "Predicting"):
    """Logits over a loader's batches (the teacher reads its own `teacher_*` inputs when there are any)."""
    device = next(model.parameters()).device
    logits = []
    for batch in tqdm(loader, desc=desc, leave=False):
        inputs = _inputs(batch, teacher)
        logits.append(model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu())
    return torch.cat(logits)


def _task_metrics(labels: np.ndarray, logits: torch.Tensor) -> dict:
    return classification_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels))


def _size(model: PreTrainedModel) -> dict:
    return {"parameters": count_parameters(model), "size_mb": size_on_disk_mb(model)}


def _latencies(models: dict[str, PreTrainedModel], batch: dict, repeats: int) -> dict[str, dict]:
    """`{role: {"batch_1": ms, "batch_32": ms}}`: the student and the teacher (each on its own inputs of the same
    examples) take turns, so that the speed-up holds on a machine whose load changes while it is measured."""
    times = {role: {} for role in models}
    for size in LATENCY_BATCH_SIZES:
        runners = {
            role: forward_runner(model, {k: v[:size] for k, v in _inputs(batch, role == "teacher").items()})
            for role, model in models.items()
        }
        for role, milliseconds in median_latencies(runners, repeats, warmup=2).items():
            times[role][f"batch_{size}"] = milliseconds
    return times


def evaluate_student(
    student: str | PreTrainedModel,
    teacher: str | PreTrainedModel | None,
    dataset_name: str | None = None,
    output_dir: str = "eval_report",
    config: DistillationConfig | None = None,
    explanation_examples: int = 20,
    explanation_method: str = "integrated_gradients",
    explanation_n_steps: int = 32,
    latency_repeats: int = 10,
    global_examples: int = 0,
    student_processor=None,
    teacher_processor=None,
    student_name: str | None = None,
    trained_method: str | None = None,
    **data_fields,
) -> dict:
    """Evaluate a student (and compare it with its teacher, if given) on a dataset's eval split; write the report.

    Args:
        student, teacher (`str` or `PreTrainedModel`): folders or Hub ids, or loaded models (then pass their
            processors too, and the student's `student_name` for the report). The teacher is optional: without it
            only task quality, size and speed are reported.
        dataset_name (`str`, *optional*): the dataset, as in a recipe; or pass `config`.
        output_dir (`str`): where the report goes.
        config (`DistillationConfig`, *optional*): the recipe whose data fields (dataset, split, columns,
            `max_eval_samples`, `max_length`) say what to evaluate on.
        explanation_examples (`int`): examples explained by both models (0 skips explanations).
        latency_repeats (`int`): rounds timed per batch size, the student and the teacher taking turns on the same
            examples (the median of each is reported).
        global_examples (`int`): examples of the global report of `kd_hf.interpret` (importance, surrogate rules,
            representations, robustness; 0 skips it), stored as `results["global"]`, PNGs under `global/`.
        trained_method (`str`, *optional*): the explanation method the student was trained to match (its
            `attribution` loss); when it is not `explanation_method`, the same examples are also compared by it
            (`results["explanations"]["trained_method"]`).
        data_fields: more recipe data fields when no `config` is given (`eval_split`, `text_columns`, ...).

    Returns:
        `dict`: what `eval_results.json` holds.
    """
    if config is None:
        config = DistillationConfig(output_dir=output_dir, dataset_name=dataset_name, report_to=[], **data_fields)
    image = config.is_image_task
    student_name, student, student_processor = _loaded(student, student_processor, student_name, image)
    teacher_name, teacher, teacher_processor = _loaded(teacher, teacher_processor, None, image)
    _, evaluation = load_raw_datasets(config)
    if evaluation is None:
        raise ValueError("Nothing to evaluate on: set `eval_split` (or keep `eval_split_size` > 0).")
    processed, collator = processed_split(config, evaluation, student, teacher, student_processor, teacher_processor)
    loader = DataLoader(processed, batch_size=64, collate_fn=collator)
    labels = np.asarray(processed["labels"])
    label_names = [student.config.id2label[i] for i in range(student.config.num_labels)]

    os.makedirs(output_dir, exist_ok=True)
    first_batch = next(iter(DataLoader(processed, batch_size=max(LATENCY_BATCH_SIZES), collate_fn=collator)))
    student_results, student_logits = _measure("student", student_name, student, loader, labels)
    results = {
        "task": "image-classification" if image else "text-classification",
        "dataset": {
            "name": config.dataset_name,
            "config": config.dataset_config_name,
            "split": config.eval_split,
            "num_examples": len(labels),
        },  # fmt: skip
        "labels": label_names,
        "student": student_results,
        "teacher": None,
        "explanations": None,
        "global": None,
    }
    matrices = {"student": _confusion(labels, student_logits, label_names)}
    if teacher is not None:
        order = align_labels(teacher.config, student.config, config.label_mapping)
        results["teacher"], teacher_logits = _measure("teacher", teacher_name, teacher, loader, labels, order)
    timed = {"student": student} | ({"teacher": teacher} if teacher is not None else {})
    for role, times in _latencies(timed, first_batch, latency_repeats).items():
        results[role]["latency_ms"] = times
    if teacher is not None:
        matrices = {"teacher": _confusion(labels, teacher_logits, label_names), **matrices}
        results["student"].update(_fidelity(results["student"], results["teacher"], student_logits, teacher_logits))
        pair = (config, evaluation, student, teacher, student_processor, teacher_processor)
        if explanation_examples > 0 and isinstance(teacher, EnsembleTeacher):
            logger.info("Several teachers: no explanations to compare (each teacher explains on its own).")
        elif explanation_examples > 0:
            results["explanations"] = compare_on_examples(
                pair, output_dir, explanation_examples, explanation_method, explanation_n_steps, trained_method
            )
        if global_examples > 0:
            from ..interpret.report import global_report_of_split

            results["global"] = global_report_of_split(
                config, evaluation, processed, labels, student, teacher, student_processor, teacher_processor,
                global_examples, output_dir, explanation_method, explanation_n_steps, order,
            )  # fmt: skip
    plot_confusion_matrices(matrices, label_names, os.path.join(output_dir, "confusion_matrix.png"))
    write_results(results, output_dir)
    return results


def _measure(role: str, name: str | None, model, loader, labels, order=None):
    """A model's results (task quality, size) and its logits over the loader, in the student's label order."""
    logits = predict(model, loader, teacher=role == "teacher", desc=f"{role.capitalize()} predictions")
    if order is not None:
        logits = logits[:, order]
    results = {
        "name_or_path": name,
        **_task_metrics(labels, logits),
        **_size(model),
    }
    return results, logits


def _confusion(labels: np.ndarray, logits: torch.Tensor, label_names: list[str]) -> np.ndarray:
    return confusion_matrix(labels, logits.argmax(-1).numpy(), labels=range(len(label_names)))


def _loaded(model, processor, name: str | None, image: bool) -> tuple[str | None, object, object]:
    """`(name, model, processor)` of a model given as a folder or Hub id (loaded here) or already loaded."""
    if isinstance(model, str):
        return model, load_model(model, image).eval(), load_processor(model, image)
    if isinstance(model, EnsembleTeacher):
        return " + ".join(model.names), model, processor
    if model is None:
        return None, None, processor
    return name or model.config.name_or_path, model, processor


def processed_split(config, evaluation, student, teacher, student_processor, teacher_processor):
    """The evaluation split preprocessed for both models, and the collator of its batches."""
    teacher_processor = teacher_processor if teacher is not None else None
    if config.is_image_task:
        processed = preprocess_images(
            evaluation, student_processor, teacher_processor,
            image_column=config.image_column, label_column=config.label_column,
            num_channels=getattr(student.config, "num_channels", 3),
            teacher_num_channels=getattr(teacher.config, "num_channels", 3) if teacher is not None else None,
        )  # fmt: skip
        return processed, default_data_collator
    processed = tokenize_for_pair(
        evaluation, student_processor, teacher_processor,
        text_columns=config.text_columns, label_column=config.label_column, max_length=config.max_length,
    )  # fmt: skip
    teacher_inputs = "teacher_input_ids" in processed.column_names
    return processed, DistillationDataCollator(student_processor, teacher_processor if teacher_inputs else None)


def _fidelity(student: dict, teacher: dict, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict:
    """How closely the student follows the teacher, and how much smaller and faster it is."""
    return {
        "top1_agreement": float(top1_agreement(student_logits, teacher_logits).mean()),
        "predictive_kl": float(predictive_kl(student_logits, teacher_logits).mean()),
        "compression": teacher["parameters"] / student["parameters"],
        "speedup": {key: teacher["latency_ms"][key] / student["latency_ms"][key] for key in student["latency_ms"]},
    }
