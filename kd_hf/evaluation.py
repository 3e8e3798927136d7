"""`kd-hf eval`: a student and its teacher side by side, on task quality, fidelity, explanations, size and speed.

```python
from kd_hf.evaluation import evaluate_student

results = evaluate_student("outputs/student", "outputs/teacher", "offline:rotten_tomatoes", output_dir="eval")
results["student"]["top1_agreement"], results["explanations"]["agreement"]["spearman"]["mean"]
```

Writes `eval_results.json` (everything), `eval_report.md` (the tables), `confusion_matrix.png`, and the explanation
report of `kd_hf.explain.report` (`explanation_report.html`, `explanations/*.png` with the deletion curves).
"""

import json
import logging
import os
import statistics
import time

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import EvalPrediction, PreTrainedModel, default_data_collator

from .config import DistillationConfig
from .data import DistillationDataCollator, load_raw_datasets, model_inputs, preprocess_images, tokenize_for_pair
from .ensemble import EnsembleTeacher
from .explain import IMAGE_BASELINE, TEXT_BASELINE, get_explainer
from .metrics import classification_metrics, predictive_kl, top1_agreement
from .models import load_model, load_processor
from .pairing import align_labels, use_eager_attention


logger = logging.getLogger(__name__)

RESULTS_FILE = "eval_results.json"
REPORT_FILE = "eval_report.md"
LATENCY_BATCH_SIZES = (1, 32)


def count_parameters(model: PreTrainedModel) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def size_on_disk_mb(model: PreTrainedModel) -> float:
    """Megabytes of the model's weights as one safetensors file (what `save_pretrained` writes, unsharded)."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    return len(safetensors_bytes(state)) / 2**20


@torch.inference_mode()
def median_latency_ms(model: PreTrainedModel, inputs: dict, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass over `inputs`, in milliseconds, after `warmup` passes."""
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


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


def _efficiency(model: PreTrainedModel, batch: dict, teacher: bool, repeats: int) -> dict:
    inputs = _inputs(batch, teacher)
    return {
        "parameters": count_parameters(model),
        "size_mb": size_on_disk_mb(model),
        "latency_ms": {
            f"batch_{size}": median_latency_ms(model, {k: v[:size] for k, v in inputs.items()}, repeats)
            for size in LATENCY_BATCH_SIZES
        },
    }


def explain_sample(config, evaluation, student, teacher, student_processor, teacher_processor, n, method, n_steps):
    """Both models' explanations of the first `n` examples of a raw eval split, compared.

    Returns:
        `tuple`: what `compare_explanations` returned (`None` for sentence pairs, not supported yet), what to show
        for each example (texts, or `[h, w]` arrays to overlay), and the raw images (`None` for text).
    """
    from .explain.compare import compare_explanations

    if method == "attention_rollout":
        for role, model in (("student", student), ("teacher", teacher)):
            use_eager_attention(model, role, "attention rollout reads attention weights")

    sample = evaluation.select(range(min(n, evaluation.num_rows)))
    if config.is_image_task:
        pixels = preprocess_images(
            sample, student_processor, image_column=config.image_column, label_column=config.label_column,
            num_channels=getattr(student.config, "num_channels", 3),
        )[:]["pixel_values"]  # fmt: skip
        comparison = compare_explanations(teacher, student, pixels, method=method, n_steps=n_steps)
        return comparison, [p.mean(0).numpy() for p in pixels], sample[config.image_column]
    if len(config.text_columns) > 1:
        logger.warning("Explanations of sentence pairs are not supported yet: skipping them.")
        return None, None, None
    texts = sample[config.text_columns[0]]
    comparison = compare_explanations(
        teacher, student, texts, student_processor, teacher_processor, method=method, n_steps=n_steps,
        max_length=config.max_length,
    )  # fmt: skip
    return comparison, texts, None


def explanation_settings(image: bool, method: str, n_steps: int) -> dict:
    """How the explanations of a report were made, in words, for the report and the card."""
    explainer = get_explainer(method, "image" if image else "text")
    return {
        "method": method,
        "n_steps": n_steps if explainer.takes_n_steps else None,
        "baseline": IMAGE_BASELINE if image else TEXT_BASELINE,
        **explainer.settings,
        "target": "the teacher's predicted class, for both models",
        "aggregation": (
            "pixel scores mean-pooled into the student's patch grid; maps compared cell by cell"
            if image
            else "sub-word scores summed into words; explanations compared word by word"
        ),
        "agreement": "signed scores ranked; top-k = top 20% of features; random baseline = chance level (expected "
        "figure with the student's scores shuffled: 0 for rank correlations, k/n for top-k overlap)",
        "faithfulness": "ERASER AOPC over bins 1/5/10/20/50% (removal = [PAD] and masked out / zero pixels); "
        "deletion and insertion AUC over 10 steps",
    }


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
        latency_repeats (`int`): forward passes timed per batch size (the median is reported).
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
    processed, collator = _processed(config, evaluation, student, teacher, student_processor, teacher_processor)
    loader = DataLoader(processed, batch_size=64, collate_fn=collator)
    labels = np.asarray(processed["labels"])
    label_names = [student.config.id2label[i] for i in range(student.config.num_labels)]

    os.makedirs(output_dir, exist_ok=True)
    student_logits = predict(student, loader, desc="Student predictions")
    first_batch = next(iter(DataLoader(processed, batch_size=max(LATENCY_BATCH_SIZES), collate_fn=collator)))
    results = {
        "task": "image-classification" if image else "text-classification",
        "dataset": {
            "name": config.dataset_name,
            "config": config.dataset_config_name,
            "split": config.eval_split,
            "num_examples": len(labels),
        },  # fmt: skip
        "labels": label_names,
        "student": {
            "name_or_path": student_name,
            **_task_metrics(labels, student_logits),
            **_efficiency(student, first_batch, False, latency_repeats),
        },
        "teacher": None,
        "explanations": None,
        "global": None,
    }
    matrices = {"student": confusion_matrix(labels, student_logits.argmax(-1).numpy(), labels=range(len(label_names)))}
    if teacher is not None:
        order = align_labels(teacher.config, student.config, config.label_mapping)
        teacher_logits = predict(teacher, loader, teacher=True, desc="Teacher predictions")
        if order is not None:
            teacher_logits = teacher_logits[:, order]
        results["teacher"] = {
            "name_or_path": teacher_name,
            **_task_metrics(labels, teacher_logits),
            **_efficiency(teacher, first_batch, True, latency_repeats),
        }
        matrices = {
            "teacher": confusion_matrix(labels, teacher_logits.argmax(-1).numpy(), labels=range(len(label_names))),
            **matrices,
        }
        results["student"].update(_fidelity(results["student"], results["teacher"], student_logits, teacher_logits))
        pair = (config, evaluation, student, teacher, student_processor, teacher_processor)
        if explanation_examples > 0 and isinstance(teacher, EnsembleTeacher):
            logger.info("Several teachers: no explanations to compare (each teacher explains on its own).")
        elif explanation_examples > 0:
            results["explanations"] = _explanations(
                pair, output_dir, explanation_examples, explanation_method, explanation_n_steps, trained_method
            )
        if global_examples > 0:
            from .interpret.report import global_report_of_split

            results["global"] = global_report_of_split(
                config, evaluation, processed, labels, student, teacher, student_processor, teacher_processor,
                global_examples, output_dir, explanation_method, explanation_n_steps, order,
            )  # fmt: skip
    _plot_confusion_matrices(matrices, label_names, os.path.join(output_dir, "confusion_matrix.png"))
    write_results(results, output_dir)
    return results


def _loaded(model, processor, name: str | None, image: bool) -> tuple[str | None, object, object]:
    """`(name, model, processor)` of a model given as a folder or Hub id (loaded here) or already loaded."""
    if isinstance(model, str):
        return model, load_model(model, image).eval(), load_processor(model, image)
    if isinstance(model, EnsembleTeacher):
        return " + ".join(model.names), model, processor
    if model is None:
        return None, None, processor
    return name or model.config.name_or_path, model, processor


def _processed(config, evaluation, student, teacher, student_processor, teacher_processor):
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


def _explanations(pair: tuple, output_dir: str, n: int, method: str, n_steps: int, trained_method: str | None):
    """Both models' explanations of `n` examples compared (and written), and also by the method the student was
    trained to match when it is another one; None where the pair cannot be compared."""
    comparison, shown, inputs = explain_sample(*pair, n, method, n_steps)
    if comparison is None:
        return None
    explanations = _write_explanations(comparison, output_dir, shown, inputs)
    if trained_method not in (None, method):
        trained, _, _ = explain_sample(*pair, n, trained_method, n_steps)
        explanations["trained_method"] = {"method": trained_method, "agreement": trained["agreement"]}
    return explanations


def _write_explanations(comparison: dict, output_dir: str, shown, images=None) -> dict:
    """The explanation report, the explained images (`examples/000.png`, ...), and what the results say of both."""
    from .explain.report import write_report

    image = images is not None
    if image:
        write_report(comparison, output_dir, list(range(len(shown))), shown)
        os.makedirs(os.path.join(output_dir, "examples"), exist_ok=True)
        for i, picture in enumerate(images):
            picture.save(os.path.join(output_dir, "examples", f"{i:03d}.png"))
    else:
        write_report(comparison, output_dir, shown)
    return {
        "settings": explanation_settings(image, comparison["method"], comparison["n_steps"]),
        "num_examples": len(comparison["explanations"]["teacher"]),
        "skipped": comparison["skipped"],
        "agreement": comparison["agreement"],
        "faithfulness": comparison["faithfulness"],
        "examples": [
            {
                "index": i,
                "text": None if image else " ".join(t.words),
                "teacher": {"label": t.label, "probability": t.probability},
                "student": {"label": s.label, "probability": s.probability},
                "input_png": f"examples/{i:03d}.png" if image else None,
                "teacher_png": f"explanations/{i:03d}_teacher.png",
                "student_png": f"explanations/{i:03d}_student.png",
            }
            for i, (t, s) in enumerate(
                zip(comparison["explanations"]["teacher"], comparison["explanations"]["student"])
            )
        ],
    }


def read_results(folder: str) -> dict | None:
    """The `eval_results.json` that `write_results` left in `folder`, if any (not Trainer's flat file of that name)."""
    path = os.path.join(folder, RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        results = json.load(file)
    return results if "student" in results else None


def write_results(results: dict, output_dir: str) -> None:
    """`eval_results.json` (strict JSON: `null` where a figure is undefined) and `eval_report.md` in `output_dir`,
    both rendered before either is written, and each written whole: a failure leaves the previous ones."""
    from .explain.report import strict_json, write_atomically
    from .report import evaluation_report

    report, content = evaluation_report(results), strict_json(results)
    write_atomically(os.path.join(output_dir, RESULTS_FILE), content)
    write_atomically(os.path.join(output_dir, REPORT_FILE), report)


def _plot_confusion_matrices(matrices: dict, label_names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 3.6), dpi=100, squeeze=False)
    for axis, (role, matrix) in zip(axes[0], matrices.items()):
        ConfusionMatrixDisplay(matrix, display_labels=label_names).plot(ax=axis, colorbar=False, cmap="Blues")
        axis.set_title(role)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
