"""`kd-hf explain`: teacher and student explanations of a dataset sample, as HTML, PNG and JSON.

Reports are written whole or not at all (`write_atomically`), and their JSON is strict (`strict_json`): a figure that
is undefined (a rank correlation of constant scores) is `null`, never `NaN`, which most JSON parsers refuse.
"""

import html
import json
import math
import os
import uuid

import numpy as np


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` so that no reader ever sees half of it: into a temporary file in the same folder, then
    renamed over `path` (`os.replace`). A write that fails leaves the previous file, if any, as it was."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="") as file:  # "x": the permissions a plain open gives
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _finite(value):
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_finite(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def strict_json(value) -> str:
    """`value` as standard JSON (indented): NaN and infinities become `null`, numpy numbers and arrays plain ones."""
    return json.dumps(_finite(value), indent=2, allow_nan=False)


def _figure(value: dict, digits: int = 3) -> str:
    """A mean with its bootstrap interval, or a bare number; "–" where it is undefined (`None` or NaN)."""
    if not isinstance(value, dict):
        return "–" if value is None or value != value else f"{value:.{digits}f}"
    if value["mean"] is None or value["mean"] != value["mean"]:
        return "–"
    interval = f" [{value['low']:.{digits}f}, {value['high']:.{digits}f}]" if "low" in value else ""
    return f"{value['mean']:.{digits}f}{interval}"


def write_report(comparison: dict, output_dir: str, examples, images: list[np.ndarray] | None = None) -> str:
    """Write `explanation_report.html`, `explanation_report.json` and `explanations/*.png` (one per model and example,
    `{i:03d}_{teacher|student}.png`, and `deletion_curves.png`); return the HTML path. The pictures come first and the
    HTML that shows them last, each file whole: a report that fails half-way leaves the previous HTML and JSON.

    Args:
        comparison (`dict`): what `kd_hf.explain.compare.compare_explanations` returned.
        output_dir (`str`): the folder to write into (created if needed).
        examples: the explained texts (or images, for captions).
        images (`list[np.ndarray]`, *optional*): the images as `[h, w]` or `[h, w, 3]` arrays, for overlays.
    """
    figures = os.path.join(output_dir, "explanations")
    os.makedirs(figures, exist_ok=True)
    teacher, student = comparison["explanations"]["teacher"], comparison["explanations"]["student"]
    agreement, faithful = comparison["agreement"], comparison["faithfulness"]

    rows = [
        f"<tr><td>{name}</td><td>{_figure(agreement[name])}</td><td>{_figure(agreement[name]['random'])}</td></tr>"
        for name in agreement
    ]
    faith_rows = [
        f"<tr><td>{name}</td><td>{_figure(faithful['teacher'][name])}</td><td>{_figure(faithful['student'][name])}</td></tr>"
        for name in ("comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc")
    ]
    examples_html = []
    for i, (t, s) in enumerate(zip(teacher, student)):
        for role, explanation in (("teacher", t), ("student", s)):
            title = f"{role}: {explanation.label} ({explanation.probability:.2f})"
            image = None if images is None else images[i]
            explanation.save_png(os.path.join(figures, f"{i:03d}_{role}.png"), image=image, title=title)
        if images is None:
            examples_html.append(f"<tr><td>{t.to_html()}</td><td>{s.to_html()}</td></tr>")
            continue
        examples_html.append(
            f'<tr><td><img src="explanations/{i:03d}_teacher.png"></td>'
            f'<td><img src="explanations/{i:03d}_student.png"></td></tr>'
        )
    n = agreement["spearman"]["n"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>kd_hf explanations</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>Teacher vs student explanations</h1>
<p>{html.escape(comparison["method"])} ({comparison["n_steps"]} steps), both models explaining the teacher's predicted
class; {n} examples compared ({comparison["skipped"]} skipped: words split differently). Means with bootstrap 95%
intervals; "random" is the chance level of each figure (its expected value for randomly shuffled scores); "–" is
undefined (constant scores).</p>
<h2>Agreement</h2><table><tr><th>metric</th><th>teacher vs student</th><th>random</th></tr>{"".join(rows)}</table>
<h2>Faithfulness (ERASER AOPC, bins 1/5/10/20/50%; deletion lower and insertion higher is better)</h2>
<table><tr><th>metric</th><th>teacher</th><th>student</th></tr>{"".join(faith_rows)}</table>
<h2>Examples</h2><table><tr><th>teacher</th><th>student</th></tr>{"".join(examples_html)}</table>
</body></html>"""
    summary = {key: value for key, value in comparison.items() if key not in ("explanations", "teacher")}
    summary = strict_json(summary)
    _plot_deletion_curves(faithful, os.path.join(figures, "deletion_curves.png"))
    write_atomically(os.path.join(output_dir, "explanation_report.json"), summary)
    path = os.path.join(output_dir, "explanation_report.html")
    write_atomically(path, page)
    return path


def _plot_deletion_curves(faithful: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 3), dpi=100)
    for role, summary in faithful.items():
        curve = summary["deletion_curve"]
        axis.plot(np.linspace(0, 1, len(curve)), curve, marker="o", label=role)
    axis.set_xlabel("fraction of features removed (most important first)")
    axis.set_ylabel("p(explained class)")
    axis.legend()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
