"""Does distillation pay on the offline text default? Prints one Markdown table.

Teacher: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (`kd-hf train recipes/offline_text_teacher.yaml`).
Student: the recipe's (`recipes/offline_text.yaml`), trained twice from the same initialisation for the same steps:
once with plain cross-entropy (no teacher) and once with kd_hf's distillation. All accuracies are on the held-out
test split, which neither the teacher nor the students saw.

    python benchmarks/distill_text.py --teacher outputs/minilm-rotten-tomatoes [--field value ...]

Any other `--field value` overrides the recipe for both students (e.g. `--seed 1`, `--max_steps 800`).
"""

import argparse
import statistics
import time

import torch
from transformers import Trainer, TrainerCallback

from kd_hf import DistillationTrainer
from kd_hf.cli import parse_recipe
from kd_hf.data import (
    DistillationDataCollator,
    label_names,
    load_offline_dataset,
    load_raw_datasets,
    tokenize_for_pair,
)
from kd_hf.metrics import classification_metrics
from kd_hf.pairing import build_student, load_model, load_processor


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, update)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)

    def median(self, warmup: int = 10) -> float:
        return statistics.median(self.times[warmup:])


def logits_on(model, dataset, collator, batch_size=128) -> torch.Tensor:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch.pop("labels")
            outputs.append(model(**batch).logits)
    return torch.cat(outputs)


def latency_ms(model, dataset, collator, batch_size: int, repeats: int) -> float:
    batch = collator([dataset[i] for i in range(batch_size)])
    batch.pop("labels")
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(3 + repeats):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--recipe", default="recipes/offline_text.yaml")
    parser.add_argument("--max_steps", type=int, default=None, help="defaults to the recipe's")
    parser.add_argument("--output_dir", default="outputs/benchmark-distill-text")
    cli, recipe_overrides = parser.parse_known_args()  # anything else overrides the recipe, e.g. --alpha 0.2

    overrides = ["--teacher_model_name_or_path", cli.teacher, "--save_strategy", "no", "--eval_strategy", "no"]
    overrides += ["--disable_tqdm", "true", "--logging_steps", "100"]
    if cli.max_steps:
        overrides += ["--max_steps", str(cli.max_steps)]
    overrides += recipe_overrides
    args = parse_recipe([cli.recipe, *overrides])

    teacher = load_model(cli.teacher).eval()
    tokenizer = load_processor(cli.teacher)
    collator = DistillationDataCollator(tokenizer)
    train_raw, _ = load_raw_datasets(args)
    labels = label_names(train_raw, args.label_column)
    train = tokenize_for_pair(train_raw, tokenizer, text_columns=args.text_columns, max_length=args.max_length)
    test = tokenize_for_pair(load_offline_dataset("rotten_tomatoes")["test"], tokenizer, max_length=args.max_length)
    test_labels = torch.tensor(test["labels"])
    teacher_logits = logits_on(teacher, test, collator)

    rows = []

    def report(name, model, seconds_per_step):
        logits = logits_on(model, test, collator)
        rows.append(
            {
                "model": name,
                "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
                "test acc": (logits.argmax(-1) == test_labels).float().mean().item(),
                "agreement": (logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item(),
                "latency b=1 (ms)": latency_ms(model, test, collator, 1, 50),
                "latency b=32 (ms)": latency_ms(model, test, collator, 32, 10),
                "s/step": seconds_per_step,
            }
        )

    report("teacher (MiniLM-L6, fine-tuned)", teacher, float("nan"))

    for distil in (False, True):
        torch.manual_seed(args.seed)
        student = build_student(args, teacher, labels)
        timer = StepTimer()
        run_args = parse_recipe(
            [cli.recipe, *overrides, "--output_dir", f"{cli.output_dir}/{'kd' if distil else 'plain'}"]
        )
        common = dict(
            model=student,
            args=run_args,
            train_dataset=train,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[timer],
        )
        if distil:
            trainer = DistillationTrainer(teacher_model=teacher, **common)
        else:
            trainer = Trainer(compute_metrics=classification_metrics, **common)
        trainer.train()
        name = "student, kd_hf soft labels" if distil else "student, no teacher (cross-entropy)"
        report(f"{name} ({args.max_steps} steps)", student, timer.median())

    teacher_acc = rows[0]["test acc"]
    print(f"\nOffline text default, {len(test)} held-out test snippets, {torch.get_num_threads()} CPU threads\n")
    header = list(rows[0]) + ["% of teacher acc", "speed-up b=32"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [
            row["model"],
            f"{row['params (M)']:.1f}",
            f"{row['test acc']:.3f}",
            f"{row['agreement']:.3f}",
            f"{row['latency b=1 (ms)']:.1f}",
            f"{row['latency b=32 (ms)']:.1f}",
            "–" if row["s/step"] != row["s/step"] else f"{row['s/step']:.3f}",
            f"{100 * row['test acc'] / teacher_acc:.1f}",
            f"{rows[0]['latency b=32 (ms)'] / row['latency b=32 (ms)']:.2f}×",
        ]
        print("| " + " | ".join(cells) + " |")
    plain, kd = rows[1]["s/step"], rows[2]["s/step"]
    print(f"\nseconds per step: distillation {kd:.3f} / plain fine-tuning {plain:.3f} = {kd / plain:.2f}×")


if __name__ == "__main__":
    main()
