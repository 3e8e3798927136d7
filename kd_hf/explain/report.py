"""`kd-hf explain`: teacher and student explanations of a dataset sample, as HTML, PNG and JSON."""

import html
import json
import os

import numpy as np


def _figure(value: dict, digits: int = 3) -> str:
    interval = f" [{value['low']:.{digits}f}, {value['high']:.{digits}f}]" if "low" in value else ""
    return f"{value['mean']:.{digits}f}{interval}"


def write_report(comparison: dict, output_dir: str, examples, images: list[np.ndarray] | None = None) -> str:
    """Write `explanation_report.html`, `explanation_report.json` and `explanations/*.png` (one per model and example,
    `{i:03d}_{teacher|student}.png`, and `deletion_curves.png`); return the HTML path.

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
        f"<tr><td>{name}</td><td>{_figure(agreement[name])}</td><td>{agreement[name]['random']:.3f}</td></tr>"
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
intervals; "random" is the same figure for random attributions.</p>
<h2>Agreement</h2><table><tr><th>metric</th><th>teacher vs student</th><th>random</th></tr>{"".join(rows)}</table>
<h2>Faithfulness (ERASER AOPC, bins 1/5/10/20/50%; deletion lower and insertion higher is better)</h2>
<table><tr><th>metric</th><th>teacher</th><th>student</th></tr>{"".join(faith_rows)}</table>
<h2>Examples</h2><table><tr><th>teacher</th><th>student</th></tr>{"".join(examples_html)}</table>
</body></html>"""
    path = os.path.join(output_dir, "explanation_report.html")
    with open(path, "w") as file:
        file.write(page)
    summary = {key: value for key, value in comparison.items() if key not in ("explanations", "teacher")}
    with open(os.path.join(output_dir, "explanation_report.json"), "w") as file:
        json.dump(summary, file, indent=2)
    _plot_deletion_curves(faithful, os.path.join(figures, "deletion_curves.png"))
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
