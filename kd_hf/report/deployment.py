"""The parity of an export as Markdown tables, rendered from `export_results.json` (data only): what `kd-hf export`
prints, and what a card's *Deployment* section can show."""

from .numbers import figure


MODEL_NAMES = {"pytorch": "PyTorch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}
PAIR_NAMES = {
    "onnx_int8_vs_pytorch": "ONNX int8 vs PyTorch student",
    "onnx_int8_vs_teacher": "ONNX int8 vs teacher",
    "pytorch_vs_teacher": "PyTorch student vs teacher",
    "onnx_fp32_vs_pytorch": "ONNX fp32 vs PyTorch student",
    "onnx_fp32_vs_teacher": "ONNX fp32 vs teacher",
}


def _share(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def parity_tables(results: dict) -> str:
    """One column per model (PyTorch fp32, ONNX fp32, ONNX int8): size, accuracy, agreement, logit gap and latency;
    then the occlusion agreement of the explanations, if measured."""
    models = results["models"]
    names = list(models)
    dataset = results["dataset"]
    rows = {
        "file": lambda m: ", ".join(m["files"]),
        "size on disk (MB)": lambda m: f"{m['size_mb']:.2f}",
        "smaller than PyTorch fp32": lambda m: f"{m['compression']:.2f}×" if "max_abs_logit_diff" in m else "–",
        "accuracy": lambda m: _share(m["accuracy"]),
        "accuracy change (points)": lambda m: f"{m['accuracy_change_points']:+.2f}" if "accuracy_change_points" in m
        else "–",
        "top-1 agreement with PyTorch fp32": lambda m: _share(m.get("top1_agreement_with_pytorch")),
        "top-1 agreement with the teacher": lambda m: _share(m["top1_agreement_with_teacher"]),
        "max abs logit difference vs PyTorch": lambda m: f"{m['max_abs_logit_diff']:.2g}"
        if "max_abs_logit_diff" in m
        else "–",
    }  # fmt: skip
    for key, shape in results["latency"]["batches"].items():
        label = f"CPU latency, {shape['rows']} row{'s' * (shape['rows'] > 1)}" + (
            f" x {shape['tokens']} tokens" if "tokens" in shape else ""
        )
        rows[f"{label} (ms, median)"] = lambda m, key=key: f"{m['latency_ms'][key]:.2f}"
        rows[f"faster than PyTorch fp32, {shape['rows']} row{'s' * (shape['rows'] > 1)}"] = lambda m, key=key: (
            f"{m['speedup'][key]:.2f}×" if "max_abs_logit_diff" in m else "–"
        )
    teacher = results.get("teacher")
    lines = [
        f"{dataset['name']}, split {dataset['split']!r}, {dataset['num_examples']:,} examples"
        + (f" (teacher accuracy {_share(teacher['accuracy'])})" if teacher else "")
        + f"; latency on {results['latency']['threads']} CPU thread(s), median of {results['latency']['repeats']} "
        "rounds taken in turns.",
        "",
        "| | " + " | ".join(MODEL_NAMES.get(name, name) for name in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    lines += [
        f"| {label} | " + " | ".join(cell(models[name]) for name in names) + " |" for label, cell in rows.items()
    ]
    explanations = results.get("explanations")
    if explanations:
        lines += [
            "",
            f"Explanations after export: occlusion on {explanations['num_examples']} examples "
            f"({explanations['settings']['baseline']}); means with bootstrap 95% intervals, chance level in parentheses"
            + (f"; {explanations['skipped']} left out of the teacher pairs (words split differently)."
               if explanations["skipped"] else "."),
            "",
            "| occlusion agreement | Spearman ρ (chance) | top-20% overlap (chance) | n |",
            "|---|---|---|---|",
        ]  # fmt: skip
        pairs = explanations["agreement"]
        for pair in sorted(pairs, key=lambda pair: list(PAIR_NAMES).index(pair) if pair in PAIR_NAMES else 99):
            agreement = pairs[pair]
            if agreement is None:
                continue
            rho, top = agreement["spearman"], agreement["top_k_overlap"]
            lines.append(
                f"| {PAIR_NAMES.get(pair, pair)} | {figure(rho, 2)} ({figure(rho['random'], 2)}) | "
                f"{figure(top, 2)} ({figure(top['random'], 2)}) | {rho['n']} |"
            )
    return "\n".join(lines) + "\n"
