"""Does a distilled student survive export to ONNX and int8? Issue 17's goals, one table.

For each student folder (by default the offline text and vision students that `make demo` and
`recipes/offline_vision.yaml` leave), `kd_hf.export.export_student` writes `onnx/model.onnx` and
`onnx/model_quantized.onnx` and measures them against the PyTorch student and its teacher on the split the student's
report used: accuracy, top-1 agreement, sizes, CPU latency (one thread, the three models taking turns on the same
batches, median of `--latency_repeats` rounds) and occlusion explanations on `--explanation_examples` examples.
The table puts the int8 graph next to the goals:

- at least 2x faster than the PyTorch fp32 student at batch 1;
- at most 0.5 accuracy points lost;
- at least 99% top-1 agreement with the fp32 student;
- at least 3.5x smaller on disk.

    python benchmarks/export.py
    python benchmarks/export.py --students outputs/minilm-rotten-tomatoes-student --latency_repeats 50

Each folder keeps its `export_results.json` (and its card its *Deployment* section); the rows also go to
`benchmarks/results/export.json`.
"""

import argparse
import json
import os
import platform

from kd_hf.export import default_teacher, export_student


STUDENTS = ["outputs/minilm-rotten-tomatoes-student", "outputs/vit-mnist-student"]
GOALS = {"speedup_batch_1": 2.0, "accuracy_lost_points": 0.5, "agreement_with_fp32": 0.99, "compression": 3.5}


def row(folder: str, results: dict) -> dict:
    int8, pytorch = results["models"]["onnx_int8"], results["models"]["pytorch"]
    explanations = (results.get("explanations") or {}).get("agreement") or {}

    def rho(pair):
        return (explanations.get(pair) or {}).get("spearman", {}).get("mean")

    return {
        "student": folder,
        "task": results["task"],
        "examples": results["dataset"]["num_examples"],
        "split": results["dataset"]["split"],
        "accuracy_fp32": pytorch["accuracy"],
        "accuracy_int8": int8["accuracy"],
        "accuracy_lost_points": -int8["accuracy_change_points"],
        "agreement_with_fp32": int8["top1_agreement_with_pytorch"],
        "agreement_with_teacher": int8["top1_agreement_with_teacher"],
        "fp32_agreement_with_teacher": pytorch["top1_agreement_with_teacher"],
        "speedup_batch_1": int8["speedup"]["batch_1"],
        "speedup_batch_32": int8["speedup"]["batch_32"],
        "compression": int8["compression"],
        "size_mb": {"pytorch": pytorch["size_mb"], "onnx_int8": int8["size_mb"]},
        "occlusion_rho_int8_vs_pytorch": rho("onnx_int8_vs_pytorch"),
        "occlusion_rho_int8_vs_teacher": rho("onnx_int8_vs_teacher"),
        "occlusion_rho_pytorch_vs_teacher": rho("pytorch_vs_teacher"),
    }


def _met(name: str, value: float) -> str:
    goal = GOALS[name]
    met = value <= goal if name == "accuracy_lost_points" else value >= goal
    return "✓" if met else "✗"


def table(rows: list[dict]) -> str:
    def number(value, spec=".2f"):
        return "–" if value is None else format(value, spec)

    header = [
        "student", "examples", "int8 faster at batch 1 (≥ 2×)", "accuracy lost, points (≤ 0.5)",
        "agreement with fp32 (≥ 99%)", "smaller on disk (≥ 3.5×)", "faster at batch 32",
        "agreement with teacher, fp32 → int8", "occlusion ρ int8 vs fp32 / vs teacher (fp32 vs teacher)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            "| " + " | ".join([
                os.path.basename(r["student"]), f"{r['examples']:,} ({r['split']})",
                f"{r['speedup_batch_1']:.2f}× {_met('speedup_batch_1', r['speedup_batch_1'])}",
                f"{r['accuracy_lost_points']:+.2f} {_met('accuracy_lost_points', r['accuracy_lost_points'])}",
                f"{r['agreement_with_fp32']:.2%} {_met('agreement_with_fp32', r['agreement_with_fp32'])}",
                f"{r['compression']:.2f}× {_met('compression', r['compression'])}",
                f"{r['speedup_batch_32']:.2f}×",
                f"{r['fp32_agreement_with_teacher']:.1%} → {r['agreement_with_teacher']:.1%}",
                f"{number(r['occlusion_rho_int8_vs_pytorch'])} / {number(r['occlusion_rho_int8_vs_teacher'])} "
                f"({number(r['occlusion_rho_pytorch_vs_teacher'])})",
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", nargs="+", default=STUDENTS)
    parser.add_argument("--latency_repeats", type=int, default=30)
    parser.add_argument("--explanation_examples", type=int, default=50)
    parser.add_argument("--results", default="benchmarks/results")
    cli = parser.parse_args()
    rows = []
    for folder in cli.students:
        if not os.path.isdir(folder):
            print(f"Skipping {folder}: no such student (run `make demo` or `kd-hf distill` first).")
            continue
        results = export_student(
            folder, quantize="int8", teacher=default_teacher(folder), explanation_examples=cli.explanation_examples,
            latency_repeats=cli.latency_repeats,
        )  # fmt: skip
        rows.append(row(folder, results))
    os.makedirs(cli.results, exist_ok=True)
    with open(os.path.join(cli.results, "export.json"), "w") as file:
        json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, file, indent=2)
    print(table(rows))


if __name__ == "__main__":
    main()
