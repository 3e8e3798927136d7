"""Teacher and student explanations of the same examples, side by side, with agreement and faithfulness figures."""

import numpy as np
import torch

from ..metrics.explanation import bootstrap_interval, explanation_agreement
from ..metrics.faithfulness import faithfulness
from .cache import cached_explanations
from .first_token import first_token_last_layer
from .inputs import grid_cells
from .kernels import onednn_linears
from .memory import keep_freed_memory
from .text import explain_text
from .vision import explain_images, patch_grid_size


FAITHFULNESS_METRICS = ("comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc")


def _summary(rows: list[dict], seed: int = 0) -> dict:
    summary = {}
    for metric in FAITHFULNESS_METRICS:
        mean, low, high = bootstrap_interval([row[metric] for row in rows], seed=seed)
        summary[metric] = {"mean": mean, "low": low, "high": high, "n": len(rows)}
    summary["deletion_curve"] = np.mean([row["deletion_curve"] for row in rows], 0).tolist()
    return summary


def _text_faithfulness(model, tokenizer, text, explanation, steps, max_length):
    # truncated as `explain_text` truncated it: the explanation scores exactly the words this encoding holds
    encoded = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length)
    device = next(model.parameters()).device
    words = torch.tensor([-1 if w is None else w for w in encoded.word_ids(0)])
    inputs = {k: v.to(device) for k, v in encoded.items()}
    return faithfulness(
        model, inputs, words.to(device), explanation.scores, explanation.target, tokenizer.pad_token_id or 0, steps
    )


def explain_model(
    model,
    examples,
    tokenizer=None,
    targets=None,
    method="integrated_gradients",
    n_steps=32,
    grid_size=None,
    faithfulness_steps=10,
    max_length=128,
) -> dict:
    """One model's explanations of `examples` (texts with `tokenizer`, or a pixel tensor) and their faithfulness.
    Texts are truncated to `max_length` tokens for both.

    Returns:
        `dict` with `explanations` (one `Explanation` each) and `faithfulness` (one dict of figures each).
    """
    if tokenizer is not None:
        explanations = explain_text(
            model, tokenizer, examples, method, targets, n_steps=n_steps, max_length=max_length
        )

        def measure(x, e):
            return _text_faithfulness(model, tokenizer, x, e, faithfulness_steps, max_length)

    else:
        explanations = explain_images(model, examples, method, targets, n_steps, grid_size=grid_size)
        cells = grid_cells(*examples.shape[-2:], explanations[0].grid.shape[0])

        def measure(x, e):
            return faithfulness(
                model, {"pixel_values": x[None]}, cells, e.grid.ravel(), e.target, 0, faithfulness_steps
            )

    device = next(model.parameters()).device
    with onednn_linears(device), keep_freed_memory(device), first_token_last_layer(model):
        rows = [measure(x, e) for x, e in zip(examples, explanations)]
    return {"explanations": explanations, "faithfulness": rows}


def compare_explanations(
    teacher,
    student,
    examples,
    tokenizer=None,
    teacher_tokenizer=None,
    method: str = "integrated_gradients",
    n_steps: int = 32,
    faithfulness_steps: int = 10,
    seed: int = 0,
    teacher_explained: dict | None = None,
    max_length: int = 128,
    cache_teacher: bool = True,
) -> dict:
    """Explain `examples` (texts, or a `[n, channels, h, w]` pixel tensor) with both models and compare.

    Both models explain the teacher's predicted class. Text explanations are compared word by word (examples whose
    two tokenizers split words differently are skipped and counted); image explanations cell by cell on the student's
    patch grid. Faithfulness is measured for each model on its own explanation. Pass `teacher_explained` (what
    `explain_model` returned for the teacher, or `result["teacher"]` of an earlier call) to compare several students
    with one teacher without explaining it again. With `cache_teacher`, the teacher's side is also kept on disk for
    later calls with the same teacher, examples and settings (`kd_hf.explain.cache`). Texts are truncated to
    `max_length` tokens, for the explanations and for the faithfulness figures alike.

    Returns:
        `dict` with `agreement` (see `kd_hf.metrics.explanation.explanation_agreement`), `faithfulness` per model
        (means with bootstrap 95% intervals, and the mean deletion curve), `completeness_error` per model (integrated
        gradients: the median, mean and largest `Explanation.completeness_error`; `None` for other methods),
        `skipped`, the `explanations`, and the `teacher`'s side for reuse.
    """
    if len(examples) == 0:
        raise ValueError("No examples to explain: pass at least one (`-n 1` or more).")
    text = tokenizer is not None
    grid_size = None if text else patch_grid_size(student)
    options = dict(method=method, n_steps=n_steps, grid_size=grid_size, faithfulness_steps=faithfulness_steps)
    options["max_length"] = max_length
    if teacher_explained is None:
        teacher_tokenizer = teacher_tokenizer or tokenizer if text else None

        def explain_teacher():
            return explain_model(teacher, examples, teacher_tokenizer, **options)

        teacher_explained = (
            cached_explanations(teacher, examples, teacher_tokenizer, options, explain_teacher)
            if cache_teacher
            else explain_teacher()
        )
    targets = [e.target for e in teacher_explained["explanations"]]
    student_explained = explain_model(student, examples, tokenizer, targets, **options)
    pairs = list(zip(teacher_explained["explanations"], student_explained["explanations"]))
    if text:
        pairs = [(t, s) for t, s in pairs if t.words == s.words]
    scores = [(t.scores, s.scores) if text else (t.grid, s.grid) for t, s in pairs]
    return {
        "method": method,
        "n_steps": n_steps,
        "agreement": explanation_agreement([t for t, _ in scores], [s for _, s in scores], seed=seed),
        "faithfulness": {
            "teacher": _summary(teacher_explained["faithfulness"], seed),
            "student": _summary(student_explained["faithfulness"], seed),
        },
        "completeness_error": {
            "teacher": _completeness(teacher_explained["explanations"]),
            "student": _completeness(student_explained["explanations"]),
        },
        "skipped": len(examples) - len(pairs),
        "explanations": {"teacher": teacher_explained["explanations"], "student": student_explained["explanations"]},
        "teacher": teacher_explained,
    }


def _completeness(explanations: list) -> dict | None:
    """How far integrated gradients' attributions are from adding up to the logit's change, over `explanations`."""
    errors = [e.completeness_error for e in explanations if e.completeness_error is not None]
    if not errors:
        return None
    return {"median": float(np.median(errors)), "mean": float(np.mean(errors)), "max": float(np.max(errors))}
