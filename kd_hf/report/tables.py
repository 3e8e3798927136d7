"""The evaluation report in Markdown (`eval_report.md`, `kd-hf eval`'s output, the card's results): rendered from
the results dict that `kd_hf.evaluation.evaluate_student` returns, which holds data only."""

from ..metrics.faithfulness import FAITHFULNESS_METRICS
from .global_behaviour import global_summary
from .numbers import figure


def results_tables(results: dict) -> str:
    """The report as Markdown tables: task and fidelity, size and speed, explanations (with the random baseline)."""
    student, teacher = results["student"], results.get("teacher") or {}
    rows = [
        ("accuracy", "accuracy"),
        ("macro-F1", "macro_f1"),
        ("top-1 agreement with the teacher", "top1_agreement"),
        ("KL(teacher ‖ student)", "predictive_kl"),
        ("parameters", "parameters"),
        ("size on disk (MB)", "size_mb"),
    ]
    itself = {"top1_agreement": 1, "predictive_kl": 0}  # the teacher against itself
    lines = ["| | teacher | student |", "|---|---|---|"]
    for name, key in rows:
        if student.get(key) is not None:
            reference = figure(teacher.get(key)) if teacher and key not in itself else itself.get(key, "–")
            lines.append(f"| {name} | {reference if teacher else '–'} | {figure(student[key])} |")
    for key, value in student.get("latency_ms", {}).items():
        speedup = student.get("speedup", {}).get(key)
        lines.append(
            f"| CPU latency, batch {key.split('_')[1]} (ms, median) | {figure(teacher.get('latency_ms', {}).get(key))}"
            f" | {figure(value)}" + (f" ({speedup:.1f}× faster) |" if speedup else " |")
        )
    explanations = results.get("explanations")
    if explanations:
        settings = explanations["settings"]
        lines += [
            "",
            f"Explanations: {settings['method']}"
            + (f" ({settings['n_steps']} steps)" if settings["n_steps"] else "")
            + f" on {explanations['num_examples']} examples; means with bootstrap 95% intervals.",
            "",
            "| explanation agreement (teacher vs student) | student | random attributions (chance) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name.replace('_', ' ')} | {figure(value)} | {figure(value['random'])} |"
            for name, value in explanations["agreement"].items()
        ]
        lines += ["", "| faithfulness | teacher | student |", "|---|---|---|"]
        faithful = explanations["faithfulness"]
        lines += [
            f"| {name.replace('_', ' ')} | {figure(faithful['teacher'][name])} | {figure(faithful['student'][name])} |"
            for name in FAITHFULNESS_METRICS
        ]
    return "\n".join(lines) + "\n"


def evaluation_report(results: dict) -> str:
    """`eval_report.md`: what was evaluated on which data, the tables, and the global behaviour if it was measured."""
    dataset = results["dataset"]
    report = (
        f"# Evaluation: {results['student']['name_or_path']}\n\n{dataset['name']}, split "
        f"{dataset['split']!r}, {dataset['num_examples']} examples.\n\n{results_tables(results)}"
    )
    if results.get("global"):
        report += f"\n## Global behaviour\n\n{global_summary(results['global'])}"
    return report
