"""What survives an export: logits, accuracy and agreement of each ONNX graph against the PyTorch student (and the
teacher), CPU latency, and size on disk.

Latency is timed in turns: every round runs each model once on the same batch, the first model of the round rotating,
so that a slow moment of a shared machine falls on all of them alike; the figure is the median of the rounds, after a
warm-up. Both runtimes get the same number of threads, one by default: the figures compare the runtimes, not how each
copes with a busy machine (with two threads on two cores, one of them busy elsewhere, PyTorch's OpenMP pool waited at
every barrier: a tiny BERT took 168 ms instead of 2.5 ms with one thread, where onnxruntime was unaffected).
"""

import glob
import os

import numpy as np
from tqdm.auto import tqdm

from ..data import model_inputs
from ..metrics.efficiency import forward_runner, median_latencies
from .runtime import OnnxClassifier


LATENCY_BATCH_SIZES = (1, 32)
LATENCY_WARMUP = 3  # passes of each model before timing: onnxruntime and PyTorch allocate on their first calls


def onnx_logits(classifier: OnnxClassifier, batches, desc: str = "ONNX") -> np.ndarray:
    return np.concatenate([classifier.logits(batch) for batch in tqdm(batches, desc=desc, leave=False)])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of examples whose top-1 class is the same under both logits."""
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float((logits.argmax(-1) == labels).mean())


def prediction_parity(labels: np.ndarray, logits: dict[str, np.ndarray], teacher: np.ndarray | None) -> dict:
    """Per model (`pytorch` first, then the graphs): accuracy and agreement with the teacher; for each graph also its
    largest logit difference, top-1 agreement and accuracy change (points of accuracy) against `pytorch`."""
    reference = logits["pytorch"]
    figures = {}
    for name, values in logits.items():
        figures[name] = {
            "accuracy": accuracy(values, labels),
            "top1_agreement_with_teacher": agreement(values, teacher) if teacher is not None else None,
        }
        if name != "pytorch":
            figures[name].update(
                max_abs_logit_diff=float(np.abs(values - reference).max()),
                top1_agreement_with_pytorch=agreement(values, reference),
                accuracy_change_points=100 * (figures[name]["accuracy"] - figures["pytorch"]["accuracy"]),
            )
    return figures


def latency(student, graphs: dict[str, OnnxClassifier], batches: dict[int, dict], repeats: int = 30) -> dict:
    """`{model: {"batch_1": ms, "batch_32": ms}}` for the PyTorch student and each graph, on the same `batches`."""
    results = {name: {} for name in ("pytorch", *graphs)}
    for size, batch in tqdm(batches.items(), desc="Latency", leave=False):
        inputs = model_inputs(batch)
        runners = {"pytorch": forward_runner(student, inputs)}
        for name, graph in graphs.items():
            feeds = graph.feeds(inputs)
            runners[name] = lambda graph=graph, feeds=feeds: graph(feeds)
        for name, milliseconds in median_latencies(runners, repeats, LATENCY_WARMUP).items():
            results[name][f"batch_{size}"] = milliseconds
    return results


def latency_batches(make_loader, num_examples: int) -> dict[int, dict]:
    """The first batch of each latency batch size (fewer rows where the split is smaller)."""
    return {size: next(iter(make_loader(min(size, num_examples)))) for size in LATENCY_BATCH_SIZES}


def size_mb(path: str) -> float:
    return os.path.getsize(path) / 2**20


def weights_files(folder: str) -> list[str]:
    """The PyTorch weights `save_pretrained` wrote (`model.safetensors`, or its shards)."""
    return sorted(glob.glob(os.path.join(folder, "model*.safetensors")))
