"""Where an evaluation's results go: `eval_results.json` (everything, strict JSON), `eval_report.md` (the tables) and
the confusion matrices."""

import json
import os


RESULTS_FILE = "eval_results.json"
REPORT_FILE = "eval_report.md"


def read_results(folder: str) -> dict | None:
    """The `eval_results.json` that `write_results` left in `folder`, if any (not Trainer's flat file of that name)."""
    path = os.path.join(folder, RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        results = json.load(file)
    return results if "student" in results else None


def write_results(results: dict, output_dir: str) -> None:
    """`eval_results.json` (strict JSON: `null` where a figure is undefined) and `eval_report.md` in `output_dir`,
    both rendered before either is written, and each written whole: a failure leaves the previous ones."""
    from ..explain.report import strict_json, write_atomically
    from ..report import evaluation_report

    report, content = evaluation_report(results), strict_json(results)
    write_atomically(os.path.join(output_dir, RESULTS_FILE), content)
    write_atomically(os.path.join(output_dir, REPORT_FILE), report)


def plot_confusion_matrices(matrices: dict, label_names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 3.6), dpi=100, squeeze=False)
    for axis, (role, matrix) in zip(axes[0], matrices.items()):
        ConfusionMatrixDisplay(matrix, display_labels=label_names).plot(ax=axis, colorbar=False, cmap="Blues")
        axis.set_title(role)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
