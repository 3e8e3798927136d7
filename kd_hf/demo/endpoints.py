"""The demo's endpoints: both models on one input, side by side, in one `Answer`.

`/explain_text` and `/explain_image` check the input (`inputs`), run each model on it (`explaining`), the teacher
first so that the student explains the teacher's class, and compare them: Spearman ρ and top-k overlap of their
scores, latency, explanation time and deletion AUC, in a message, a table and the deletion curves.
"""

import re
from typing import Any, NamedTuple

import numpy as np

from ..explain import EXPLAINERS
from .explaining import DELETION_STEPS, _explain_image, _explain_text, _highlights
from .inputs import MAX_IMAGE_SIDE, _BadInput, _checked_text, _open_image, _settings
from .loading import _Model


TOP_K = 0.2  # top-k overlap of the top 20% of words or cells


class Answer(NamedTuple):
    """What an explanation request returns: one value per output of the page (and of the `/explain_*` endpoints), in
    this order. Roles the demo does not show (no teacher) and every output but the message after a bad input are
    None."""

    message: str
    teacher_label: dict | None  # {class: probability}
    student_label: dict | None
    teacher: Any  # word highlights [(word, score)] or a heatmap overlay (an RGB array)
    student: Any
    figures: Any  # the agreement / latency / deletion-AUC table (a DataFrame)
    deletion: Any  # the deletion curves of both models (a DataFrame)


def _label(model, probabilities: np.ndarray) -> dict[str, float]:
    """`gr.Label`'s value: the probability of each class, by name."""
    return {str(model.config.id2label[i]): float(p) for i, p in enumerate(probabilities)}


def _json_number(value: float) -> float | None:
    """`value` rounded for display; None for a missing or undefined one (NaN is not JSON)."""
    return None if value is None or np.isnan(value) else round(float(value), 4)


def _table(report: dict, pair: bool, unit: str):
    """The figures of one explanation as a table a visitor can read: a row per metric, a column per model (no teacher
    column without a teacher); agreement is the student's with the teacher."""
    import pandas as pd

    roles = ["teacher", "student"] if pair else ["student"]
    per_model = [
        ("latency, ms (one forward pass)", "latency_ms"),
        ("explanation time, ms", "explain_ms"),
        ("deletion AUC (lower: more faithful)", "deletion_auc"),
    ]
    rows = [[name, *(report[key][role] for role in roles)] for name, key in per_model]
    if pair:
        top = f"top-{report['top_k']} of {report['features']} {unit}"
        rows += [
            ["Spearman ρ with the teacher", None, report["spearman"]],
            [f"{top}: overlap with the teacher", None, report["top_k_overlap"]],
        ]
    return pd.DataFrame(rows, columns=["metric", *roles], dtype=object)  # object: a missing value stays None


class _Explainer:
    """The demo's two endpoints over a loaded student and (optional) teacher."""

    def __init__(self, student: _Model, teacher: _Model | None):
        self.student, self.teacher = student, teacher

    def _report(self, method: str, runs: dict, features: int, unit: str, notes: list[str]):
        """What text and images share: the message, the figures table and the deletion curves."""
        import pandas as pd

        from ..metrics.explanation import agreement

        pair = runs.get("teacher") is not None
        figures = agreement(runs["teacher"]["scores"], runs["student"]["scores"], TOP_K) if pair else {}
        report = {
            "explained_class": (runs["teacher"] or runs["student"])["label"],
            "features": features,
            "top_k": max(1, int(round(TOP_K * features))),
            "spearman": _json_number(figures.get("spearman")) if pair else None,
            "top_k_overlap": _json_number(figures.get("top_k_overlap")) if pair else None,
            "latency_ms": {role: run and round(run["latency"], 2) for role, run in runs.items()},
            "explain_ms": {role: run and round(run["explain"], 1) for role, run in runs.items()},
            "deletion_auc": {role: run and round(run["deletion"]["deletion_auc"], 4) for role, run in runs.items()},
        }
        # the fractions of features that `faithfulness` removed at each point of its curve
        fractions = np.round(np.arange(DELETION_STEPS + 1) * features / DELETION_STEPS) / features
        curves = pd.DataFrame(
            [
                {"fraction removed": float(x), "probability": p, "model": role}
                for role, run in runs.items()
                if run is not None
                for x, p in zip(fractions, run["deletion"]["deletion_curve"])
            ]
        )
        name = EXPLAINERS[method].label
        summary = f"Explained class: **{report['explained_class']}** ({name})."
        if pair:
            rho = report["spearman"]
            rho = "undefined (constant scores)" if rho is None else f"{rho:.2f}"
            summary += f" Agreement: Spearman ρ {rho}, top-{report['top_k']} overlap {report['top_k_overlap']:.2f}."
            teacher_ms, student_ms = report["latency_ms"]["teacher"], report["latency_ms"]["student"]
            speed = teacher_ms / student_ms if teacher_ms >= student_ms else student_ms / teacher_ms
            faster = "faster" if teacher_ms >= student_ms else "slower"
            summary += f" Latency: teacher {teacher_ms:.1f} ms, student {student_ms:.1f} ms ({speed:.1f}× {faster})."
        else:
            summary += f" Latency: student {report['latency_ms']['student']:.1f} ms."
        return " ".join([*notes, summary]), _table(report, pair, unit), curves

    @staticmethod
    def _failure(message: str) -> Answer:
        """The answer to a bad input: the message, and every other output cleared."""
        import gradio as gr

        gr.Warning(message)
        return Answer(f"⚠️ {message}", *[None] * (len(Answer._fields) - 1))

    def explain_text(self, text: str, method: str, steps: int) -> Answer:
        """Explain `text` with both models: their predictions, word attributions, figures and deletion curves."""
        try:
            method, steps = _settings(method, steps)
            entries = {"teacher": self.teacher, "student": self.student}
            text = _checked_text(text, entries)
        except _BadInput as error:
            return self._failure(str(error))
        spans = list(re.finditer(r"\S+", text))
        starts, words = [span.start() for span in spans], [span.group() for span in spans]
        runs, label = {"teacher": None, "student": None}, None
        for role, entry in entries.items():
            if entry is None:
                continue
            probabilities, latency, explain, explanation, deletion = _explain_text(
                entry, text, starts, method, steps, label
            )
            label = label or explanation.label
            runs[role] = {
                "prediction": _label(entry.model, probabilities), "label": explanation.label,
                "scores": explanation.scores, "normalized": explanation.normalized(), "latency": latency,
                "explain": explain, "deletion": deletion,
            }  # fmt: skip
        message, table, curves = self._report(method, runs, len(words), "words", [])
        labels = [run and run["prediction"] for run in runs.values()]
        highlights = [run and _highlights(words, run["normalized"]) for run in runs.values()]
        return Answer(message, *labels, *highlights, table, curves)

    def explain_image(self, upload: dict | None, method: str, steps: int) -> Answer:
        """Explain an uploaded image with both models: their predictions, heatmap overlays, figures and deletion
        curves."""
        from ..explain.vision import patch_grid_size

        notes = []
        try:
            method, steps = _settings(method, steps)
            image = _open_image(upload)
            if max(image.size) > MAX_IMAGE_SIDE:
                notes.append(
                    f"The image ({image.size[0]}×{image.size[1]}) was shrunk to {MAX_IMAGE_SIDE} pixels on its longer "
                    "side first."
                )
                image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        except _BadInput as error:
            return self._failure(str(error))
        grid = patch_grid_size(self.student.model)
        runs, overlays, label = {"teacher": None, "student": None}, {"teacher": None, "student": None}, None
        for role, entry in (("teacher", self.teacher), ("student", self.student)):
            if entry is None:
                continue
            probabilities, latency, explain, explanation, deletion, overlays[role] = _explain_image(
                entry, image, grid, method, steps, label
            )
            label = label or explanation.label
            runs[role] = {
                "prediction": _label(entry.model, probabilities), "label": explanation.label,
                "scores": explanation.grid, "latency": latency, "explain": explain, "deletion": deletion,
            }  # fmt: skip
        message, table, curves = self._report(method, runs, grid * grid, f"cells ({grid}×{grid})", notes)
        labels = [run and run["prediction"] for run in runs.values()]
        return Answer(message, *labels, overlays["teacher"], overlays["student"], table, curves)
