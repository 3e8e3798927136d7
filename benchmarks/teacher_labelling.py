"""Labelling texts with the teacher: in row order, as kd_hf's teacher cache did, against shortest first, as it does
now. One Markdown table.

`teacher_cache: true` runs the teacher once over the training set and any transfer set (`cache_teacher_outputs`) in
batches of 64. A batch pads to its longest text, and random batches of 64 IMDB sentences pad to about 2.4 times their
mean length, so most of the teacher's arithmetic went to padding. The cache now runs the texts shortest first and
puts each row's logits back in its place. Both orders label the same texts here, taking turns chunk by chunk (which
goes first alternates), so that the shared machine's load falls on both alike:

- texts per second, and seconds for 60,000 texts (the transfer set of `offline_text_albert_imdb_pruned.yaml`);
- tokens per text the teacher ran, padding included, against the texts' own mean length;
- the largest difference between the two orders' logits (float32 noise: a text's logits do not depend on its batch).

    python benchmarks/teacher_labelling.py                        # 8,192 IMDB sentences, chunks of 2,048
    python benchmarks/teacher_labelling.py --dataset rotten_tomatoes --threads 2

Results go to `benchmarks/results/teacher_labelling.json`.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from unittest import mock

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

import kd_hf.teacher_cache
from kd_hf.data import DistillationDataCollator, load_offline_dataset, tokenize_for_pair
from kd_hf.models import load_model, load_processor
from kd_hf.teacher_cache import cache_teacher_outputs


def label(chunk: datasets.Dataset, teacher, collator, batch_size: int, by_length: bool) -> tuple[float, int, list]:
    """Seconds, tokens run (padding included) and logits of one `cache_teacher_outputs` call on an in-memory chunk
    (which datasets does not cache, so the teacher runs every time)."""
    widths = []
    hook = teacher.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    row_order = mock.patch.object(kd_hf.teacher_cache, "length_order", lambda dataset: None)  # what the cache did
    try:
        with contextlib.nullcontext() if by_length else row_order:
            start = time.perf_counter()
            cached = cache_teacher_outputs(chunk, teacher, collator, batch_size=batch_size)
            seconds = time.perf_counter() - start
    finally:
        hook.remove()
    return seconds, sum(widths), cached["teacher_logits"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--dataset", default="imdb_sentences", choices=["imdb_sentences", "rotten_tomatoes"])
    parser.add_argument("--num_texts", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=2048, help="texts per turn")
    parser.add_argument("--batch_size", type=int, default=64, help="the teacher cache's batch size")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default="benchmarks/results/teacher_labelling.json")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    datasets.disable_progress_bars()

    # The transfer sample kd_hf draws (`max_transfer_samples`, seed 0), or the training snippets.
    texts = load_offline_dataset(cli.dataset)["train"].shuffle(seed=0).select(range(cli.num_texts))
    tokenizer = load_processor(cli.teacher)
    encoded = tokenize_for_pair(texts, tokenizer, label_column=None, max_length=cli.max_length)
    encoded = encoded.flatten_indices(keep_in_memory=True)
    teacher = load_model(cli.teacher)
    collator = DistillationDataCollator(tokenizer)
    real_tokens = sum(len(ids) for ids in encoded["input_ids"])

    runs = {"row order": [], "shortest first": []}
    tokens = dict.fromkeys(runs, 0)
    largest_difference = 0.0
    starts = range(0, len(encoded), cli.chunk)
    for turn, start in enumerate(tqdm(starts, desc="chunks")):
        chunk = encoded.select(range(start, min(start + cli.chunk, len(encoded))), keep_in_memory=True)
        logits = {}
        for name in list(runs)[:: 1 if turn % 2 == 0 else -1]:
            seconds, ran, logits[name] = label(chunk, teacher, collator, cli.batch_size, name == "shortest first")
            runs[name].append(len(chunk) / seconds)
            tokens[name] += ran
        difference = np.abs(np.array(logits["row order"]) - np.array(logits["shortest first"])).max()
        largest_difference = max(largest_difference, float(difference))

    rows = []
    for name, rates in runs.items():
        rows.append({
            "order": name, "texts_per_s": statistics.median(rates),
            "tokens_per_text": tokens[name] / len(encoded),
        })  # fmt: skip
    for row in rows:
        row["speed_up"] = row["texts_per_s"] / rows[0]["texts_per_s"]
        row["s_per_60k_texts"] = 60_000 / row["texts_per_s"]
    print(
        f"\n{cli.dataset}: {len(encoded)} texts of {real_tokens / len(encoded):.1f} tokens on average, batches of "
        f"{cli.batch_size}, {cli.threads} thread(s); medians over {len(starts)} chunks, the orders taking turns\n"
    )
    print("| teacher runs the texts | texts/s | s for 60,000 texts | tokens run per text | × row order |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['order']} | {row['texts_per_s']:.0f} | {row['s_per_60k_texts']:.0f} | "
            f"{row['tokens_per_text']:.1f} | {row['speed_up']:.2f}× |"
        )
    print(f"\nLargest difference between the two orders' logits: {largest_difference:.1e}")

    result = {
        "dataset": cli.dataset, "texts": len(encoded), "mean_tokens": real_tokens / len(encoded),
        "batch_size": cli.batch_size, "chunk": cli.chunk, "torch_threads": cli.threads,
        "largest_logit_difference": largest_difference, "rows": rows,
        "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg(), "torch": torch.__version__,
    }  # fmt: skip
    os.makedirs(os.path.dirname(cli.output) or ".", exist_ok=True)
    with open(cli.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"Results: {cli.output}")


if __name__ == "__main__":
    main()
