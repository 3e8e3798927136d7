"""Integrated gradients on CPU: kd_hf against the per-example captum loop, transformers-interpret and ferret (issue 19).

Every method explains the same model's prediction on the same inputs, taking turns chunk by chunk (so that the shared
machine's load falls on all of them alike), and is measured four ways:

- **seconds per input**, and how many times faster than the per-example captum loop;
- **completeness error**: |sum of attributions - (f(input) - f(baseline))| relative to |f(input) - f(baseline)|, per
  input (the mean and the median), each method for its own function (transformers-interpret explains the softmax
  probability, the others the logit);
- **rank agreement with 64-step integrated gradients** (kd_hf's, per input): Spearman rho of the word scores (text;
  peers' token scores summed into words as kd_hf does) or of the pixel maps (images), the mean and the smallest;
- **arithmetic rate**: the floating-point operations per input (counted by torch's `FlopCounterMode` in a run of
  its own, outside the timed turns) over the time per input, against the rate of one large fp32 matrix product on
  as many threads, the faster of PyTorch's `matmul` and oneDNN's (what this CPU can do at best), which bounds how
  much faster the same number of steps can get.

kd_hf runs its `linear` products through oneDNN where that is faster than PyTorch's own BLAS (on AMD CPUs, MKL's AVX2
code against oneDNN's AVX-512; `kd_hf.explain.kernels`); `KD_HF_ONEDNN_LINEAR=0` measures it without.

Text: the fine-tuned MiniLM teacher on Rotten Tomatoes validation snippets, baseline `[CLS] [PAD] ... [SEP]` for all.
Images: the MNIST ViT teacher on test digits, all-zero baseline; transformers-interpret's image explainer adds noise
tunnels and ferret has none, so the loop is the peer there.

    python benchmarks/explain_throughput.py                     # text and images, 64 inputs each
    python benchmarks/explain_throughput.py --n_steps 32 --kd_hf_steps 32 24 16

The verdict is given against each peer: kd_hf's fastest row at no larger completeness error (mean, within 1% for
float32 noise) than that peer's and Spearman rho >= 0.99 against 64 steps, on average and (the strict reading) for
every input.

transformers-interpret and ferret pin transformers < 5, so `make benchmark-explain` installs them with `--no-deps`
into `benchmarks/.peers` (never into the project's environment) and this script imports only their integrated
gradients. Each modality runs in a process of its own (`--one_process`: both in this one). Results go to
`benchmarks/results/explain_throughput.json`.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from functools import partial

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from kd_hf.data import load_offline_dataset
from kd_hf.explain import explain_images, explain_text
from kd_hf.explain.explanation import completeness_error
from kd_hf.explain.text import merge_words
from kd_hf.models import load_model, load_processor


PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".peers")


def encode(tokenizer, text: str, max_length: int, device):
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt",
                        return_special_tokens_mask=True)  # fmt: skip
    return encoded, {k: v.to(device) for k, v in encoded.items() if k != "special_tokens_mask"}


def baseline_ids(model, encoded, device) -> torch.Tensor:
    special = encoded["special_tokens_mask"].bool()
    return torch.where(special, encoded["input_ids"], model.config.pad_token_id or 0).to(device)


def captum_text_loop(model, tokenizer, texts, targets, n_steps: int, max_length: int) -> list[tuple]:
    """captum's `LayerIntegratedGradients` on the embeddings, one text at a time, as its tutorial does: per text, the
    word scores and the completeness error."""
    from captum.attr import LayerIntegratedGradients

    def forward(input_ids, *values):
        return model(input_ids=input_ids, **dict(zip(names, values))).logits

    explainer = LayerIntegratedGradients(forward, model.get_input_embeddings())
    results = []
    for text, target in zip(texts, targets):
        encoded, inputs = encode(tokenizer, text, max_length, model.device)
        names = [name for name in inputs if name != "input_ids"]
        attributions, delta = explainer.attribute(
            inputs["input_ids"], baseline_ids(model, encoded, model.device), target=target,
            additional_forward_args=tuple(inputs[name] for name in names), n_steps=n_steps,
            return_convergence_delta=True,
        )  # fmt: skip
        scores = attributions.sum(-1)[0].detach().float().cpu().numpy()
        results.append((merge_words(text, encoded[0], scores)[1], completeness_error(scores.sum(), float(delta))))
    return results


def per_example_loop(model, tokenizer, texts, n_steps: int, max_length: int) -> list[np.ndarray]:
    """The loop's word scores of each text for its predicted class (benchmarks/gpu_check.py's peer)."""
    with torch.no_grad():
        targets = [int(model(**encode(tokenizer, t, max_length, model.device)[1]).logits.argmax()) for t in texts]
    return [scores for scores, _ in captum_text_loop(model, tokenizer, texts, targets, n_steps, max_length)]


def transformers_interpret_loop(model, tokenizer, texts, targets, n_steps: int, max_length: int) -> list[tuple]:
    """transformers-interpret's `SequenceClassificationExplainer` (layer integrated gradients of the softmax
    probability on the embeddings), one text at a time: its raw token attributions summed into words."""
    from transformers_interpret import SequenceClassificationExplainer

    explainer = SequenceClassificationExplainer(model, tokenizer, attribution_type="lig")
    results = []
    for text, target in zip(texts, targets):
        explainer(text, index=target, n_steps=n_steps)
        raw = explainer.attributions._attributions.sum(-1)[0].detach().float().cpu().numpy()
        encoded, _ = encode(tokenizer, text, max_length, model.device)
        error = completeness_error(raw.sum(), float(explainer.attributions.delta))
        results.append((merge_words(text, encoded[0], raw[: len(encoded["input_ids"][0])])[1], error))
    return results


def import_ferret_gradients():
    """ferret's integrated gradients module, without its package `__init__` (which imports LIME, SHAP and dataset
    loaders that its transformers < 5 pins keep from installing here)."""
    package = types.ModuleType("ferret")
    package.__path__ = [os.path.join(PEERS, "ferret")]
    sys.modules.setdefault("ferret", package)
    from ferret.explainers.gradient import IntegratedGradientExplainer

    return IntegratedGradientExplainer


def ferret_loop(model, tokenizer, texts, targets, n_steps: int, max_length: int) -> list[tuple]:
    """ferret's `IntegratedGradientExplainer` (x input), one text at a time. It gives no delta: its completeness error
    is filled in afterwards by `logit_changes`, outside its time."""
    explainer = import_ferret_gradients()(model, tokenizer, multiply_by_inputs=True)
    results = []
    for text, target in zip(texts, targets):
        scores = explainer.compute_feature_importance(text, target=target, call_args={"n_steps": n_steps}).scores
        encoded, _ = encode(tokenizer, text, max_length, model.device)
        results.append((merge_words(text, encoded[0], np.asarray(scores))[1], None))
    return results


def logit_changes(model, tokenizer, texts, targets, max_length: int) -> list[float]:
    """f(text) - f(baseline) of each target's logit, the change complete attributions add up to."""
    changes = []
    for text, target in zip(texts, targets):
        encoded, inputs = encode(tokenizer, text, max_length, model.device)
        with torch.no_grad():
            logit = model(**inputs).logits[0, target]
            baseline = model(**{**inputs, "input_ids": baseline_ids(model, encoded, model.device)}).logits[0, target]
        changes.append(float(logit - baseline))
    return changes


def kd_hf_text(model, tokenizer, texts, targets, n_steps: int, max_length: int, batch_size: int) -> list[tuple]:
    explanations = explain_text(model, tokenizer, texts, target=targets, n_steps=n_steps, batch_size=batch_size,
                                max_length=max_length, progress=False)  # fmt: skip
    return [(e.scores, e.completeness_error) for e in explanations]


def captum_image_loop(model, pixels, targets, n_steps: int) -> list[tuple]:
    """captum's `IntegratedGradients` on the pixels, one image at a time, all-zero baseline."""
    from captum.attr import IntegratedGradients

    explainer = IntegratedGradients(lambda x: model(pixel_values=x).logits)
    results = []
    for image, target in zip(pixels, targets):
        image = image[None].to(model.device).requires_grad_(True)
        attributions, delta = explainer.attribute(image, torch.zeros_like(image), target=target, n_steps=n_steps,
                                                  return_convergence_delta=True)  # fmt: skip
        scores = attributions.sum(1)[0].detach().float().cpu().numpy()
        results.append((scores, completeness_error(scores.sum(), float(delta))))
    return results


def kd_hf_images(model, pixels, targets, n_steps: int, batch_size: int) -> list[tuple]:
    explanations = explain_images(model, pixels, target=targets, n_steps=n_steps, batch_size=batch_size,
                                  progress=False)  # fmt: skip
    return [(e.scores, e.completeness_error) for e in explanations]


def take_turns(methods: dict, inputs: list, call, chunk: int) -> dict:
    """Run every method on each chunk of `inputs` in turn (the order rotating), timing each; their results in order."""
    results = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    names = list(methods)
    for round_index, start in enumerate(range(0, len(inputs), chunk)):
        part = inputs[start : start + chunk]
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            started = time.perf_counter()
            results[name] += call(methods[name], part)
            seconds[name] += time.perf_counter() - started
    return {name: (results[name], seconds[name]) for name in methods}


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of the fastest of `repeats` fp32 `size` x `size` matrix products, by PyTorch's `matmul` (MKL) and by
    oneDNN (what `kd_hf.explain.kernels` runs): the CPU's practical peak is the faster of the two."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), size)
    products = {
        "pytorch": lambda: a @ b,
        "onednn": lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""),
    }
    rates = {}
    for name, product in products.items():
        product()  # warm-up
        fastest = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            fastest = min(fastest, time.perf_counter() - started)
        rates[name] = 2 * size**3 / fastest / 1e9
    return rates


@register_flop_formula(torch.ops.mkldnn._linear_pointwise)
def _onednn_linear_flop(input_shape, weight_shape, *args, **kwargs) -> int:
    """oneDNN's `linear` (kd_hf's explanations on CPUs where it is faster): 2 x rows x in x out."""
    return 2 * math.prod(input_shape[:-1]) * weight_shape[0] * weight_shape[1]


def gflop_per_input(methods: dict, inputs: list, call) -> dict:
    """Floating-point operations of each method per input (matrix products and attention), counted by torch."""
    counted = {}
    for name, method in methods.items():
        with FlopCounterMode(display=False) as counter:
            call(method, inputs)
        counted[name] = counter.get_total_flops() / len(inputs) / 1e9
    return counted


def summarise(results: dict, reference: list[np.ndarray], loop_name: str, count: int, gflops: dict) -> list[dict]:
    rows = []
    loop_seconds = results[loop_name][1]
    for name, (pairs, seconds) in results.items():
        rhos = [spearmanr(np.ravel(s), np.ravel(r))[0] for (s, _), r in zip(pairs, reference) if np.size(r) > 2]
        errors = [error for _, error in pairs]
        rows.append({
            "method": name, "seconds_per_input": seconds / count, "speed_up_vs_loop": loop_seconds / seconds,
            "completeness_error_mean": float(np.mean(errors)), "completeness_error_median": float(np.median(errors)),
            "spearman_vs_64_steps_mean": float(np.nanmean(rhos)), "spearman_vs_64_steps_min": float(np.nanmin(rhos)),
            "gflop_per_input": gflops[name], "gflop_per_second": gflops[name] * count / seconds,
        })  # fmt: skip
    return rows


def text_rows(cli) -> list[dict]:
    model = load_model(cli.text_model).eval()
    tokenizer = load_processor(cli.text_model)
    texts = list(load_offline_dataset("rotten_tomatoes")["validation"]["text"][: cli.num_examples])
    reference = explain_text(model, tokenizer, texts, n_steps=64, max_length=cli.max_length, progress=False)
    targets = [e.target for e in reference]
    peers = {"captum loop": captum_text_loop}
    if os.path.isdir(os.path.join(PEERS, "transformers_interpret")):
        peers["transformers-interpret"] = transformers_interpret_loop
    if os.path.isdir(os.path.join(PEERS, "ferret")):
        peers["ferret"] = ferret_loop
    methods = {f"{name} ({cli.n_steps} steps)": partial(loop, n_steps=cli.n_steps) for name, loop in peers.items()}
    for steps in cli.kd_hf_steps:
        methods[f"kd_hf `explain_text` ({steps} steps)"] = partial(
            kd_hf_text, n_steps=steps, batch_size=cli.batch_size
        )

    def call(method, part):
        return method(model, tokenizer, [t for t, _ in part], [g for _, g in part], max_length=cli.max_length)

    for method in methods.values():
        call(method, list(zip(texts, targets))[:2])  # warm-up
    gflops = gflop_per_input(methods, list(zip(texts, targets)), call)
    results = take_turns(methods, list(zip(texts, targets)), call, cli.chunk)
    changes = logit_changes(model, tokenizer, texts, targets, cli.max_length)
    for name, (pairs, seconds) in results.items():
        if name.startswith("ferret"):
            totals = [float(np.sum(s)) for s, _ in pairs]
            errors = [completeness_error(total, total - change) for total, change in zip(totals, changes)]
            results[name] = ([(s, error) for (s, _), error in zip(pairs, errors)], seconds)
    return summarise(results, [e.scores for e in reference], next(iter(methods)), len(texts), gflops)


def image_rows(cli) -> list[dict]:
    from kd_hf.data.vision import preprocess_images

    model = load_model(cli.image_model, image=True).eval()
    processor = load_processor(cli.image_model, image=True)
    sample = load_offline_dataset("mnist")["test"].shuffle(seed=0).select(range(cli.num_examples))
    pixels = preprocess_images(sample, processor, image_column="image", label_column="label",
                               num_channels=model.config.num_channels)[:]["pixel_values"]  # fmt: skip
    pixels = torch.stack(list(pixels)) if isinstance(pixels, list) else pixels
    reference = explain_images(model, pixels, n_steps=64, progress=False)
    targets = [e.target for e in reference]
    methods = {f"captum loop ({cli.n_steps} steps)": partial(captum_image_loop, n_steps=cli.n_steps)}
    for steps in cli.kd_hf_steps:
        methods[f"kd_hf `explain_images` ({steps} steps)"] = partial(kd_hf_images, n_steps=steps,
                                                                     batch_size=cli.batch_size)  # fmt: skip
    items = list(range(len(pixels)))

    def call(method, part):
        return method(model, pixels[part], [targets[i] for i in part])

    for method in methods.values():
        call(method, items[:2])  # warm-up
    gflops = gflop_per_input(methods, items, call)
    results = take_turns(methods, items, call, cli.chunk)
    return summarise(results, [e.scores for e in reference], next(iter(methods)), len(items), gflops)


def print_table(title: str, rows: list[dict], peak: float) -> None:
    print(f"\n{title}\n")
    print("| method | s per input | × the captum loop | completeness error, mean (median) "
          "| Spearman ρ vs 64-step IG, mean (min) | GFLOP per input | GFLOP/s (of the peak) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['seconds_per_input']:.3f} | {row['speed_up_vs_loop']:.2f}× | "
            f"{row['completeness_error_mean']:.4f} ({row['completeness_error_median']:.4f}) | "
            f"{row['spearman_vs_64_steps_mean']:.4f} ({row['spearman_vs_64_steps_min']:.4f}) | "
            f"{row['gflop_per_input']:.2f} | {row['gflop_per_second']:.1f} ({row['gflop_per_second'] / peak:.0%}) |"
        )


# "No larger" completeness error, within float32 noise: the same integral computed by two libraries differs in the
# fifth digit.
NO_LARGER = 1.01


def verdicts(modality: str, rows: list[dict]) -> list[str]:
    """Against each peer: kd_hf's fastest row at no larger completeness error and rho >= 0.99 (mean; every input)."""
    lines = []
    kd_hf = [row for row in rows if row["method"].startswith("kd_hf")]
    for peer in (row for row in rows if not row["method"].startswith("kd_hf")):
        for reading, key in (("mean", "spearman_vs_64_steps_mean"), ("every input", "spearman_vs_64_steps_min")):
            fast = [
                row for row in kd_hf
                if row["completeness_error_mean"] <= NO_LARGER * peer["completeness_error_mean"] and row[key] >= 0.99
            ]  # fmt: skip
            best = min(fast, key=lambda row: row["seconds_per_input"], default=None)
            heading = f"- {modality}, vs {peer['method']}, ρ ≥ 0.99 ({reading})"
            if best is None:
                lines.append(f"{heading}: missed (no kd_hf row qualifies)")
                continue
            speed_up = peer["seconds_per_input"] / best["seconds_per_input"]
            lines.append(f"{heading}: {'met' if speed_up >= 2 else 'missed'}, {speed_up:.2f}× with {best['method']}")
    return lines


def write_results(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as file:
        json.dump(results, file, indent=2)


def run_apart(cli) -> None:
    """Each modality in a process of its own, as a user's explanations of one model run, their tables in one file.

    In one process, kd_hf's image explanations after the text part took 3-15% longer than before it (the median of
    three calls of 32 images, six tries, 2026-12-06), with no page faults and the text model freed; the cause was not
    found. `--one_process` measures them so."""
    results = {"meta": {}}
    for modality in cli.modalities:
        with tempfile.TemporaryDirectory() as folder:
            output = os.path.join(folder, "results.json")
            command = [sys.executable, __file__, *sys.argv[1:], "--modalities", modality, "--output", output]
            subprocess.run(command, check=True)  # the last --modalities and --output given win
            with open(output) as file:
                part = json.load(file)
        results["meta"][modality], results[modality] = part["meta"][modality], part[modality]
    write_results(cli.output, results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text_model", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--image_model", default="outputs/vit-mnist")
    parser.add_argument("--modalities", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument("--num_examples", type=int, default=64)
    parser.add_argument("--n_steps", type=int, default=32, help="integration steps of the peers")
    parser.add_argument("--kd_hf_steps", type=int, nargs="+", default=[32, 16, 14, 12],
                        help="kd_hf's steps, one row each")  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=16, help="kd_hf's inputs per batch")
    parser.add_argument("--chunk", type=int, default=8, help="inputs per turn")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default="benchmarks/results/explain_throughput.json")
    parser.add_argument("--one_process", action="store_true",
                        help="run the modalities in this process (by default, each in a process of its own)")  # fmt: skip
    cli = parser.parse_args()
    if len(cli.modalities) > 1 and not cli.one_process:
        return run_apart(cli)
    torch.set_num_threads(cli.threads)
    if os.path.isdir(PEERS):
        sys.path.insert(0, PEERS)
    load_before = os.getloadavg()
    peaks = matmul_peak()
    tables = {}
    if "text" in cli.modalities:
        tables["text"] = text_rows(cli)
    if "image" in cli.modalities:
        tables["image"] = image_rows(cli)
    peaks = {name: max(rate, peaks[name]) for name, rate in matmul_peak().items()}
    peak = max(peaks.values())
    meta = {
        "num_examples": cli.num_examples, "peer_n_steps": cli.n_steps, "torch_threads": cli.threads,
        "batch_size": cli.batch_size, "machine": platform.processor() or platform.machine(),
        "matmul_peak_gflop_per_second": peak, "matmul_peaks_gflop_per_second": peaks,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }  # fmt: skip
    write_results(cli.output, {"meta": dict.fromkeys(tables, meta), **tables})
    for modality, rows in tables.items():
        model = cli.text_model if modality == "text" else cli.image_model
        title = f"Integrated gradients, {modality}: {model}, {cli.num_examples} inputs, {cli.threads} thread(s)"
        rates = ", ".join(f"{name} {rate:.1f}" for name, rate in peaks.items())
        print_table(f"{title}; fp32 matrix product peak {peak:.1f} GFLOP/s ({rates})", rows, peak)
    print("\n≥ 2× faster at no larger completeness error (mean):")
    for modality, rows in tables.items():
        print("\n".join(verdicts(modality, rows)))


if __name__ == "__main__":
    main()
