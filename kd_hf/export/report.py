"""`kd-hf export`: export a student to ONNX (and int8), measure what survives, write `export_results.json`.

```python
from kd_hf.export import export_student

results = export_student("outputs/student", quantize="int8", teacher="outputs/teacher")
results["models"]["onnx_int8"]["top1_agreement_with_pytorch"], results["models"]["onnx_int8"]["speedup"]
```
"""

import json
import os

import numpy as np
import torch

from .. import __version__
from ..card import CARD_FILE, write_card
from ..data import load_raw_datasets
from ..evaluation import predict
from ..explain.report import strict_json, write_atomically
from ..models import load_model, load_processor
from ..pairing import align_labels
from .data import evaluation_config, evaluation_loader
from .exporter import DEFAULT_OPSET, ONNX_DIR, export_onnx
from .occlusion import compare_occlusion
from .parity import (
    LATENCY_WARMUP,
    accuracy,
    latency,
    latency_batches,
    onnx_logits,
    prediction_parity,
    size_mb,
    weights_files,
)
from .runtime import OnnxClassifier


RESULTS_FILE = "export_results.json"


def _loaded_teacher(teacher, processor, image: bool):
    if isinstance(teacher, str):
        return teacher, load_model(teacher, image).eval(), processor or load_processor(teacher, image)
    if teacher is None:
        return None, None, None
    return teacher.config.name_or_path, teacher.eval(), processor


def export_student(
    folder: str,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    teacher=None,
    teacher_processor=None,
    config=None,
    eval_split: str | None = None,
    max_examples: int | None = None,
    explanation_examples: int = 50,
    latency_repeats: int = 30,
    threads: int = 1,
) -> dict:
    """Export the student saved in `folder` (`export_onnx`), measure the graphs against it, write `RESULTS_FILE`.

    Args:
        folder (`str`): the student folder (weights, config, tokenizer or image processor).
        quantize (`str`, *optional*): `"int8"` also writes and measures `onnx/model_quantized.onnx`.
        opset (`int`, *optional*, defaults to 18): the ONNX opset.
        teacher (`str` or `PreTrainedModel`, *optional*): the teacher (a folder, Hub id or loaded model; pass its
            `teacher_processor` with a loaded one), for agreement with it; `kd_hf.export.default_teacher(folder)`
            names the one the student was distilled from.
        config (`DistillationConfig`, *optional*): whose data fields say what to measure on; defaults to
            `evaluation_config(folder, eval_split=..., max_examples=...)`: the split the student's report used.
        explanation_examples (`int`, *optional*, defaults to 50): examples explained by occlusion on every model
            (0 skips it; sentence pairs are not explained).
        latency_repeats (`int`, *optional*, defaults to 30): timed rounds per batch size.
        threads (`int`, *optional*, defaults to 1): CPU threads of PyTorch and of onnxruntime while measuring (see
            `kd_hf.export.parity` for why one); PyTorch's own setting is restored afterwards.

    Returns:
        `dict`: what `export_results.json` holds (see `kd_hf.export`).
    """
    config = config or evaluation_config(folder, eval_split=eval_split, max_examples=max_examples)
    exported = export_onnx(folder, quantize, opset)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = _measure(
            folder, exported, config, teacher, teacher_processor, explanation_examples, latency_repeats, threads
        )
    finally:
        torch.set_num_threads(before)
    write_atomically(os.path.join(folder, RESULTS_FILE), strict_json(results))
    _add_to_card(folder, results)
    return results


def _add_to_card(folder: str, results: dict) -> None:
    """A student with an explanation card gets its *Deployment* section: the card's facts keep the export's figures
    (so that a push renders them too) and README.md is rendered again."""
    path = os.path.join(folder, CARD_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as file:
        facts = json.load(file)
    write_card(folder, {**facts, "deployment": results})


def _measure(folder, exported, config, teacher, teacher_processor, explanation_examples, latency_repeats, threads):
    """The figures of `export_results.json` (see `kd_hf.export`)."""
    image = config.is_image_task
    student, processor = load_model(folder, image, dtype="float32").eval(), load_processor(folder, image)
    teacher_name, teacher, teacher_processor = _loaded_teacher(teacher, teacher_processor, image)
    _, evaluation = load_raw_datasets(config)
    if evaluation is None:
        raise ValueError("Nothing to measure the export on: set `eval_split` (or keep `eval_split_size` > 0).")
    processed, make_loader = evaluation_loader(config, evaluation, student, processor, teacher, teacher_processor)
    labels = np.asarray(processed[:]["labels"]) if "labels" in processed.column_names else None

    paths = {"onnx_fp32": exported.model_path, "onnx_int8": exported.quantized_path}
    graphs = {name: OnnxClassifier(path, threads) for name, path in paths.items() if path is not None}
    logits = {"pytorch": predict(student, make_loader(64), desc="PyTorch student").numpy()}
    logits.update({name: onnx_logits(graph, make_loader(64), desc=name) for name, graph in graphs.items()})
    teacher_logits, order = None, None
    if teacher is not None:
        order = align_labels(teacher.config, student.config, getattr(config, "label_mapping", None))
        teacher_logits = predict(teacher, make_loader(64), teacher=True, desc="Teacher").numpy()
        teacher_logits = teacher_logits[:, order] if order is not None else teacher_logits
    models = prediction_parity(labels, logits, teacher_logits)
    batches = latency_batches(make_loader, len(processed))
    times = latency(student, graphs, batches, latency_repeats)
    files = {"pytorch": weights_files(folder), **{name: [path] for name, path in paths.items() if path}}
    for name, figures in models.items():
        figures["files"] = [os.path.relpath(path, folder) for path in files[name]]
        figures["size_mb"] = sum(size_mb(path) for path in files[name])
        figures["latency_ms"] = times[name]
    for name, figures in models.items():
        figures["compression"] = models["pytorch"]["size_mb"] / figures["size_mb"]
        figures["speedup"] = {key: times["pytorch"][key] / value for key, value in times[name].items()}

    explanations = None
    if explanation_examples > 0 and (image or len(config.text_columns) == 1):
        reference = teacher_logits if teacher_logits is not None else logits["pytorch"]
        n = min(explanation_examples, len(processed))
        explanations = _explanations(
            config, evaluation, processed[:n], reference[:n], graphs, student, processor, teacher, teacher_processor,
            order,
        )  # fmt: skip

    teacher_figures = None
    if teacher is not None:
        teacher_accuracy = accuracy(teacher_logits, labels) if labels is not None else None
        teacher_figures = {"name_or_path": teacher_name, "accuracy": teacher_accuracy}
    return {
        "kd_hf_version": __version__,
        "task": "image-classification" if image else "text-classification",
        "architecture": exported.architecture,
        "onnx": {
            "folder": ONNX_DIR,
            "opset": exported.opset,
            "inputs": list(exported.input_names),
            "output": "logits",
            "dynamic_axes": ["batch"] if image else ["batch", "sequence"],
            "quantization": exported.quantization,
        },
        "dataset": {
            "name": config.dataset_name,
            "config": config.dataset_config_name,
            "split": config.eval_split,
            "num_examples": len(processed),
        },
        "teacher": teacher_figures,
        "models": models,
        "latency": {
            "device": "cpu",
            "threads": threads,
            "repeats": latency_repeats,
            "warmup": LATENCY_WARMUP,
            "batches": {f"batch_{size}": _shape(batch, image) for size, batch in batches.items()},
        },
        "explanations": explanations,
    }


def _explanations(config, evaluation, sample, reference_logits, graphs, student, processor, teacher,
                  teacher_processor, order):  # fmt: skip
    """Occlusion of the split's first examples by every model, each explaining the reference's predicted class (the
    teacher's, else the PyTorch student's), compared (`compare_occlusion`)."""
    targets = [int(t) for t in reference_logits.argmax(-1)]
    image = config.is_image_task
    return compare_occlusion(
        graphs, student, teacher,
        sample["pixel_values"] if image else list(evaluation[: len(targets)][config.text_columns[0]]),
        targets, tokenizer=None if image else processor, teacher_tokenizer=teacher_processor,
        teacher_examples=sample.get("teacher_pixel_values"),
        teacher_targets=[order[t] for t in targets] if order is not None else None, max_length=config.max_length,
    )  # fmt: skip


def _shape(batch: dict, image: bool) -> dict:
    values = batch["pixel_values" if image else "input_ids"]
    return {"rows": int(values.shape[0])} | ({} if image else {"tokens": int(values.shape[1])})


def read_export_results(folder: str) -> dict | None:
    """The `export_results.json` of `folder`, if it has one."""
    path = os.path.join(folder, RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)
