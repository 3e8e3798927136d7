"""Does distillation pay on the offline text task, and which losses help? Prints one Markdown table.

Teacher: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (`kd-hf train recipes/offline_text_teacher.yaml`). Students:
the recipe's (`recipes/offline_text_soft_labels.yaml`), trained from the same initialisation for the same steps, once
per variant and seed: `plain` is cross-entropy without a teacher (a plain `Trainer`); any other variant is kd_hf with
the listed losses, `name=weight` setting a weight (default 1), e.g. `soft_label,attention=0.5`. Accuracies are on the
held-out test split, which neither the teacher nor the students saw.

    python benchmarks/distill_text.py --teacher outputs/minilm-rotten-tomatoes \\
        --variants plain soft_label soft_label,attention soft_label,attention,hidden_state --seeds 42 43 44

With `--explain_examples N`, each model's integrated-gradients word attributions on N test snippets are compared
with the teacher's (Spearman, with the random-attribution baseline in brackets; the student of the last seed) and
their faithfulness measured (deletion AUC, lower is better).

Any other `--field value` overrides the recipe for every student (e.g. `--max_steps 800`, `--alpha 0.2`).
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
from kd_hf.explain.compare import compare_explanations
from kd_hf.metrics import classification_metrics
from kd_hf.models import load_model, load_processor
from kd_hf.pairing import build_student


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

    def mean(self, warmup: int = 10) -> float:
        """The average over the run: steps that differ (an attribution loss every N steps) count as they come."""
        return statistics.mean(self.times[warmup:] or self.times)


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
    """Median wall time of one forward pass on real test snippets, after 3 warm-up passes."""
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


def parse_variant(variant: str) -> tuple[list[str], list[float]] | None:
    """`plain` -> None; `soft_label,attention=0.5` -> (['soft_label', 'attention'], [1.0, 0.5])."""
    if variant == "plain":
        return None
    items = [item.partition("=") for item in variant.split(",")]
    return [name for name, _, _ in items], [float(weight or 1) for _, _, weight in items]


def mean_and_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--recipe", default="recipes/offline_text_soft_labels.yaml")
    parser.add_argument("--variants", nargs="+", default=["plain", "soft_label"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--output_dir", default="outputs/benchmark-distill-text")
    parser.add_argument(
        "--explain_examples", type=int, default=0,
        help="also compare explanations with the teacher's on this many test snippets",
    )  # fmt: skip
    parser.add_argument("--explain_method", default="integrated_gradients", help="see kd_hf.explain.TEXT_METHODS")
    cli, recipe_overrides = parser.parse_known_args()

    overrides = ["--teacher_model_name_or_path", cli.teacher, "--save_strategy", "no", "--eval_strategy", "no"]
    overrides += ["--disable_tqdm", "true", "--logging_steps", "100", *recipe_overrides]
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
    teacher_accuracy = (teacher_logits.argmax(-1) == test_labels).float().mean().item()

    def evaluate(model) -> tuple[float, float]:
        predictions = logits_on(model, test, collator).argmax(-1)
        accuracy = (predictions == test_labels).float().mean().item()
        return accuracy, (predictions == teacher_logits.argmax(-1)).float().mean().item()

    def size_and_speed(model) -> list[str]:
        return [
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
            f"{latency_ms(model, test, collator, 1, 50):.1f}",
            f"{latency_ms(model, test, collator, 32, 10):.1f}",
        ]

    explain_texts = load_offline_dataset("rotten_tomatoes")["test"]["text"][: cli.explain_examples]
    teacher_explained = {}  # explained once, compared with every student

    def explanation_columns(student) -> list[str]:
        """Spearman of IG word attributions with the teacher's [random baseline], and deletion AUC (lower = more
        faithful), of the teacher (when `student` is None) or a student."""
        if not cli.explain_examples:
            return []
        student = student or teacher
        for model in (student, teacher):
            model.set_attn_implementation("eager")
        comparison = compare_explanations(
            teacher, student, explain_texts, tokenizer, method=cli.explain_method, n_steps=16,
            teacher_explained=teacher_explained.get("side"),
        )  # fmt: skip
        teacher_explained["side"] = comparison["teacher"]
        rho = comparison["agreement"]["spearman"]
        deletion = comparison["faithfulness"]["student"]["deletion_auc"]["mean"]
        return [f"{rho['mean']:.2f} [{rho['random']:.2f}]", f"{deletion:.3f}"]

    rows = [
        ["teacher (MiniLM-L6, fine-tuned)", f"{teacher_accuracy:.3f}", "1.000", "–", *size_and_speed(teacher)]
        + explanation_columns(None)
    ]
    plain_step = None
    for variant in cli.variants:
        losses = parse_variant(variant)
        accuracies, agreements, steps = [], [], []
        for seed in cli.seeds:
            run_overrides = [*overrides, "--seed", str(seed), "--output_dir", f"{cli.output_dir}/{variant}-{seed}"]
            if losses:
                run_overrides += ["--loss_type", *losses[0], "--loss_weights", *map(str, losses[1])]
            run_args = parse_recipe([cli.recipe, *run_overrides])
            torch.manual_seed(seed)
            student = build_student(run_args, teacher, labels)
            timer = StepTimer()
            common = dict(
                model=student, args=run_args, train_dataset=train, processing_class=tokenizer,
                data_collator=collator, callbacks=[timer],
            )  # fmt: skip
            if losses:
                trainer = DistillationTrainer(teacher_model=teacher, **common)
            else:
                trainer = Trainer(compute_metrics=classification_metrics, **common)
            trainer.train()
            accuracy, agreement = evaluate(student)
            accuracies.append(accuracy)
            agreements.append(agreement)
            steps.append(timer.median())
            print(f"{variant} seed {seed}: accuracy {accuracy:.3f}, agreement {agreement:.3f}", flush=True)
        step = statistics.median(steps)
        plain_step = step if losses is None else plain_step
        name = (
            "no teacher (cross-entropy)"
            if losses is None
            else "kd_hf " + " + ".join(f"{n}×{w:g}" if w != 1 else n for n, w in zip(*losses))
        )
        ratio = f" ({step / plain_step:.2f}×)" if plain_step else ""
        rows.append([
            f"student, {name}", mean_and_spread(accuracies), mean_and_spread(agreements), f"{step:.3f}{ratio}",
            *size_and_speed(student), *explanation_columns(student),
        ])  # fmt: skip

    print(
        f"\nOffline text default: {len(train)} training snippets, {args.max_steps} steps of {args.per_device_train_batch_size},"
        f" {len(test)} held-out test snippets, seeds {cli.seeds} (mean ± std), {torch.get_num_threads()} CPU threads\n"
    )
    header = ["model", "test accuracy", "agreement with teacher", "s/step (× plain)", "params (M)"]
    header += ["latency b=1 (ms)", "latency b=32 (ms)"]
    if cli.explain_examples:
        header += [f"{cli.explain_method} Spearman vs teacher [random], {cli.explain_examples} texts", "deletion AUC"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
