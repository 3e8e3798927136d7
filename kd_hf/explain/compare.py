"""Teacher and student explanations of the same examples, side by side, with agreement and faithfulness figures."""

import numpy as np
import torch

from ..metrics.explanation import bootstrap_interval, explanation_agreement
from ..metrics.faithfulness import faithfulness
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


def _text_faithfulness(model, tokenizer, text, explanation, steps):
    encoded = tokenizer([text], return_tensors="pt", truncation=True)
    device = next(model.parameters()).device
    words = torch.tensor([-1 if w is None else w for w in encoded.word_ids(0)])
    inputs = {k: v.to(device) for k, v in encoded.items()}
    return faithfulness(
        model, inputs, words.to(device), explanation.scores, explanation.target, tokenizer.pad_token_id or 0, steps
    )


def _grid_cells(height: int, width: int, grid_size: int) -> torch.Tensor:
    rows = torch.arange(height) * grid_size // height
    columns = torch.arange(width) * grid_size // width
    return rows[:, None] * grid_size + columns[None, :]


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
) -> dict:
    """Explain `examples` (texts, or a `[n, channels, h, w]` pixel tensor) with both models and compare.

    Both models explain the teacher's predicted class. Text explanations are compared word by word (examples whose
    two tokenizers split words differently are skipped and counted); image explanations cell by cell on the student's
    patch grid. Faithfulness is measured for each model on its own explanation.

    Returns:
        `dict` with `agreement` (see `kd_hf.metrics.explanation.explanation_agreement`), `faithfulness` per model
        (means with bootstrap 95% intervals, and the mean deletion curve), `skipped`, and the `explanations`.
    """
    text = tokenizer is not None
    if text:
        teacher_tokenizer = teacher_tokenizer or tokenizer
        teacher_explanations = explain_text(teacher, teacher_tokenizer, examples, method, n_steps=n_steps)
        targets = [e.target for e in teacher_explanations]
        student_explanations = explain_text(student, tokenizer, examples, method, targets, n_steps=n_steps)
        pairs = [(t, s) for t, s in zip(teacher_explanations, student_explanations) if t.words == s.words]
        teacher_scores, student_scores = [t.scores for t, _ in pairs], [s.scores for _, s in pairs]
        faithful = {
            "teacher": [_text_faithfulness(teacher, teacher_tokenizer, x, e, faithfulness_steps)
                        for x, e in zip(examples, teacher_explanations)],
            "student": [_text_faithfulness(student, tokenizer, x, e, faithfulness_steps)
                        for x, e in zip(examples, student_explanations)],
        }  # fmt: skip
    else:
        grid_size = patch_grid_size(student)
        teacher_explanations = explain_images(teacher, examples, method, n_steps=n_steps, grid_size=grid_size)
        targets = [e.target for e in teacher_explanations]
        student_explanations = explain_images(student, examples, method, targets, n_steps, grid_size=grid_size)
        pairs = list(zip(teacher_explanations, student_explanations))
        teacher_scores, student_scores = [t.grid for t, _ in pairs], [s.grid for _, s in pairs]
        cells = _grid_cells(*examples.shape[-2:], grid_size)
        faithful = {
            role: [faithfulness(model, {"pixel_values": x[None]}, cells, e.grid.ravel(), e.target, 0, faithfulness_steps)
                   for x, e in zip(examples, explanations)]
            for role, model, explanations in (("teacher", teacher, teacher_explanations),
                                              ("student", student, student_explanations))
        }  # fmt: skip
    return {
        "method": method,
        "n_steps": n_steps,
        "agreement": explanation_agreement(teacher_scores, student_scores, seed=seed),
        "faithfulness": {role: _summary(rows, seed) for role, rows in faithful.items()},
        "skipped": len(examples) - len(pairs),
        "explanations": {"teacher": teacher_explanations, "student": student_explanations},
    }
