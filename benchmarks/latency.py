"""Is a distilled text student ≥ 5× faster than its teacher (issue 14)? One Markdown table, the models taking turns.

Every round runs each model once on its batch, the first of the round rotating
(`kd_hf.metrics.efficiency.median_latencies`), so that a slow moment of a shared machine falls on all of them alike;
the figure is the median over the rounds. The reports of `kd-hf distill` and `kd-hf eval` time a student and its
teacher the same way; this script puts any number of students, each with its own tokenizer, beside one teacher on the
same test texts.

    python benchmarks/latency.py --students outputs/minilm-rotten-tomatoes-student-albert-imdb-two-stage
    python benchmarks/latency.py --teacher outputs/minilm-rotten-tomatoes --students A B --batch_sizes 1 32 --threads 1

Texts: the first rows of `--dataset`'s `--split` (the offline Rotten Tomatoes test snippets by default), padded to
the longest of each batch and cut at `--max_length`, as the reports tokenize them.
"""

import argparse

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd_hf.data.offline import OFFLINE_PREFIX, load_offline_dataset
from kd_hf.metrics.efficiency import count_parameters, forward_runner, median_latencies


def load(folder: str):
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--students", nargs="+", required=True, help="student folders")
    parser.add_argument("--dataset", default="offline:rotten_tomatoes", help="an offline dataset (`offline:` name)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per batch size")
    parser.add_argument("--threads", type=int, default=1)
    cli = parser.parse_args()
    if not cli.dataset.startswith(OFFLINE_PREFIX):
        parser.error(f"--dataset takes a bundled dataset, `{OFFLINE_PREFIX}<name>` (e.g. offline:rotten_tomatoes).")
    torch.set_num_threads(cli.threads)

    texts = load_offline_dataset(cli.dataset[len(OFFLINE_PREFIX) :])[cli.split][cli.text_column]
    models = {name: load(name) for name in [cli.teacher, *cli.students]}
    times = {name: {} for name in models}
    for size in cli.batch_sizes:
        runners = {}
        for name, (model, tokenizer) in models.items():
            inputs = tokenizer(texts[:size], padding=True, truncation=True, max_length=cli.max_length,
                               return_tensors="pt")  # fmt: skip
            runners[name] = forward_runner(model, dict(inputs))
        for name, milliseconds in median_latencies(runners, cli.repeats).items():
            times[name][size] = milliseconds

    teacher_parameters = count_parameters(models[cli.teacher][0])
    header = ["model", "parameters", "teacher / model"]
    header += [f"ms at batch {size} (teacher / model)" for size in cli.batch_sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (model, _) in models.items():
        parameters = count_parameters(model)
        cells = [name, f"{parameters / 1e6:.2f}M", f"{teacher_parameters / parameters:.1f}×"]
        cells += [f"{times[name][size]:.1f} ({times[cli.teacher][size] / times[name][size]:.1f}×)"
                  for size in cli.batch_sizes]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    print(f"\n{cli.repeats} rounds per batch size, {cli.threads} thread(s), the models in rotating turns.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
