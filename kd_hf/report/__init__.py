"""Presentation: the Markdown tables and summaries of an evaluation, rendered from the results dicts that computation
returns (`kd_hf.evaluation.evaluate_student`, `kd_hf.interpret.global_report`, `kd_hf.export.export_student`). `eval_report.md`, `kd-hf eval`'s
output and the explanation card all use these, so a figure reads the same everywhere."""

from .deployment import parity_tables
from .global_behaviour import global_summary
from .numbers import figure, percent
from .tables import evaluation_report, results_tables


__all__ = ["evaluation_report", "figure", "global_summary", "parity_tables", "percent", "results_tables"]
