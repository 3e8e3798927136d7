"""Presentation: the Markdown tables and summaries of an evaluation, rendered from the results dicts that computation
returns (`kd_hf.evaluation.evaluate_student`, `kd_hf.interpret.global_report`). `eval_report.md`, `kd-hf eval`'s
output and the explanation card all use these, so a figure reads the same everywhere."""

from .global_behaviour import global_summary
from .numbers import figure, percent
from .tables import evaluation_report, results_tables


__all__ = ["evaluation_report", "figure", "global_summary", "percent", "results_tables"]
