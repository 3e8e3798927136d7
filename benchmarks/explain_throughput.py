"""How much faster are kd_hf's batched explanations than a per-example captum loop? One Markdown table.

Both explain the same model (the fine-tuned MiniLM teacher by default) on the same validation snippets with
integrated gradients on the input embeddings: the same captum method (`LayerIntegratedGradients`), the same number
of steps, the same baseline (special tokens kept, every other token `[PAD]`) and the same target (the model's
prediction). kd_hf's `explain_text` pads `--batch_sizes` texts into one batch and integrates them together, at most
`--internal_batch_size` interpolated inputs per forward pass, once in the given order and once with the texts sorted
by length (less padding); the loop calls captum once per text, unpadded, as a captum tutorial does. Word scores of
the two are compared (Pearson r per text, and the largest absolute difference relative to the text's largest
absolute score): they should be the same numbers.

    python benchmarks/explain_throughput.py --model outputs/minilm-rotten-tomatoes --num_examples 64

Results also go to `outputs/benchmark-overhead/explain_throughput.json`.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from kd_hf.data import load_offline_dataset
from kd_hf.explain import explain_text
from kd_hf.explain.text import merge_words
from kd_hf.models import load_model, load_processor


def per_example_loop(model, tokenizer, texts, n_steps: int, max_length: int) -> list[np.ndarray]:
    """captum's `LayerIntegratedGradients`, one text at a time: word scores per text."""
    from captum.attr import LayerIntegratedGradients

    names = [name for name in tokenizer("a").keys() if name != "input_ids"]  # attention_mask, token_type_ids

    def forward(input_ids, *values):
        return model(input_ids=input_ids, **dict(zip(names, values))).logits

    explainer = LayerIntegratedGradients(forward, model.get_input_embeddings())
    scores = []
    for text in tqdm(texts, desc="per-example captum loop", leave=False):
        encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt",
                            return_special_tokens_mask=True).to(model.device)  # fmt: skip
        extra = {name: encoded[name] for name in names}
        input_ids = encoded["input_ids"]
        baseline = torch.where(encoded["special_tokens_mask"].bool(), input_ids, model.config.pad_token_id or 0)
        with torch.no_grad():
            target = int(model(**{"input_ids": input_ids, **extra}).logits.argmax(-1))
        attributions = explainer.attribute(
            input_ids, baseline, target=target, additional_forward_args=tuple(extra.values()), n_steps=n_steps
        )
        token_scores = attributions.sum(-1)[0].detach().float().cpu().numpy()
        scores.append(merge_words(text, encoded[0], token_scores)[1])
    return scores


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> dict[str, float]:
    correlations, differences = [], []
    for a, b in zip(reference, other):
        if len(a) > 1:
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
        differences.append(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return {
        "pearson_mean": float(np.mean(correlations)),
        "pearson_min": float(np.min(correlations)),
        "max_relative_abs_diff": float(np.max(differences)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--num_examples", type=int, default=64)
    parser.add_argument("--n_steps", type=int, default=32, help="integration steps, for both")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 64], help="kd_hf texts per batch")
    parser.add_argument(
        "--internal_batch_size", type=int, default=512,
        help="interpolated inputs per forward pass in kd_hf (captum's `internal_batch_size`); without a bound, 64 "
        "texts x 32 steps take about 15 GB",
    )  # fmt: skip
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--output_dir", default="outputs/benchmark-overhead")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    cli = parser.parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)

    model = load_model(cli.model).eval()
    tokenizer = load_processor(cli.model)
    texts = load_offline_dataset("rotten_tomatoes")["validation"]["text"][: cli.num_examples]
    # Warm-up (first-call allocations, captum imports), then the measured runs.
    per_example_loop(model, tokenizer, texts[:2], cli.n_steps, cli.max_length)
    explain_text(model, tokenizer, texts[:2], n_steps=cli.n_steps, max_length=cli.max_length, progress=False)
    load_before = os.getloadavg()

    loop_scores, loop_s = timed(per_example_loop, model, tokenizer, texts, cli.n_steps, cli.max_length)
    rows = [{"run": "captum `LayerIntegratedGradients`, one text at a time", "seconds": loop_s}]
    # Shortest first, so that a batch pads its texts to about their own length; results go back in the given order.
    by_length = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i])["input_ids"]))
    for batch_size in cli.batch_sizes:
        for sort in (False, True):
            order = by_length if sort else list(range(len(texts)))
            explanations, seconds = timed(
                explain_text, model, tokenizer, [texts[i] for i in order], method="integrated_gradients",
                n_steps=cli.n_steps, batch_size=batch_size, internal_batch_size=cli.internal_batch_size,
                max_length=cli.max_length, progress=True,
            )  # fmt: skip
            scores = [None] * len(texts)
            for i, explanation in zip(order, explanations):
                scores[i] = explanation.scores
            rows.append({
                "run": f"kd_hf `explain_text`, {batch_size} texts per batch"
                + (", texts sorted by length" if sort else ""),
                "seconds": seconds, **agreement(loop_scores, scores),
            })  # fmt: skip
    for row in rows:
        row["examples_per_s"] = len(texts) / row["seconds"]
        row["speed_up"] = loop_s / row["seconds"]

    meta = {
        "model": cli.model, "num_examples": len(texts), "n_steps": cli.n_steps, "max_length": cli.max_length,
        "torch_threads": torch.get_num_threads(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }  # fmt: skip
    os.makedirs(cli.output_dir, exist_ok=True)
    with open(os.path.join(cli.output_dir, "explain_throughput.json"), "w") as file:
        json.dump({"meta": meta, "rows": rows}, file, indent=2)

    print(
        f"\nIntegrated gradients ({cli.n_steps} steps) of {cli.model} on {len(texts)} validation snippets; "
        f"{meta['torch_threads']} CPU threads, load average {load_before[0]:.2f} before / "
        f"{meta['load_average_after'][0]:.2f} after\n"
    )
    print("| run | seconds | examples/s | × the loop | Pearson r vs the loop, mean (min) | largest difference |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        same = "–"
        if "pearson_mean" in row:
            same = f"{row['pearson_mean']:.4f} ({row['pearson_min']:.4f}) | {row['max_relative_abs_diff']:.1e}"
        else:
            same += " | –"
        print(
            f"| {row['run']} | {row['seconds']:.1f} | {row['examples_per_s']:.2f} | {row['speed_up']:.2f}× | {same} |"
        )
    best = max(row["speed_up"] for row in rows[1:])
    print(f"\n- batched explanations ≥ 5 × the per-example loop: {'met' if best >= 5 else 'missed'} ({best:.2f}×)")


if __name__ == "__main__":
    main()
