"""What does distillation cost per step, next to plain fine-tuning and to other distillation tools? One Markdown table.

On the soft-label text recipe (`recipes/offline_text_soft_labels.yaml`: Rotten Tomatoes snippets, the fine-tuned MiniLM
teacher, the 2-layer BERT student, batch 32, max_length 64), each variant trains the same student from the same
initialisation for `--steps` optimizer steps, in one process:

- `plain`: cross-entropy without a teacher (a plain `Trainer`), the floor;
- `live`, `live_bf16`: kd_hf with the teacher run at every step, in fp32 or in bfloat16 (`teacher_dtype`);
- `cached`: kd_hf with `teacher_cache: true` (teacher logits computed once, read at every step);
- `cached_grouped`: the same with `train_sampling_strategy: group_by_length` (transformers' `LengthGroupedSampler`),
  batches of texts of like length: random batches of 32 snippets pad to 1.9 times their mean length;
- `attribution_1`, `attribution_4`: kd_hf with `loss_type: [soft_label, attribution]` (weights 1, 0.2, as in
  `recipes/offline_text_attribution.yaml`) from cached teacher logits and attributions, every step / every 4 steps;
- `intermediate`: kd_hf with TinyBERT's attention-map and hidden-state losses beside the soft labels, the teacher
  run at every step (it gives the internals they match);
- `two_stage`: the same for the first `--first_stage` of the measured steps (`loss_steps`; a sixth, as 1,000 of 6,000
  steps in `recipes/offline_text_albert_imdb_pruned.yaml`), then the soft labels alone from the cache (read its mean:
  the median is a cached step);
- `naive`: the transformers knowledge-distillation task guide's pattern, a `Trainer` whose `compute_loss` runs
  `self.teacher(**inputs)` under `no_grad` and mixes `KLDivLoss` at temperature T with the cross-entropy;
- `textbrewer`: TextBrewer's `BasicDistiller` on the same teacher, student, data, batch size, temperature, loss
  weights, optimizer (AdamW, weight decay, linear warm-up and decay, gradient clipping) and steps. It is installed
  apart from the main environment, never into it: `make benchmark-overhead` does it, or
  `.venv/bin/pip install --target benchmarks/.textbrewer --no-deps -c .ci/constraints.txt textbrewer==0.2.1.post1
  tensorboardX protobuf`.

A step is the wall time between the ends of two consecutive optimizer steps (data loading, forward, backward,
update): the median after `--warmup` steps is reported, with its ratio to `plain`, and the mean (a step with
attribution every 4 steps is not the median one). Then each student's accuracy on the held-out test split (and
top-1 agreement with the teacher) after those steps. Set-up is the time to build the trainer: for the cached variants
it includes computing the teacher cache, or reading it from the datasets cache when an earlier run with the same
teacher and data made it.

Runs one after the other see whatever else the machine is doing at the time. So, last, the three live-teacher losses
(kd_hf, naive, TextBrewer) also take turns on the same batches (`--alternating_rounds`), which a shared machine
slows down alike.

    python benchmarks/overhead.py --teacher outputs/minilm-rotten-tomatoes --steps 300

Results also go to `outputs/benchmark-overhead/overhead.json`. Any other `--field value` overrides the recipe (e.g.
`--max_train_samples 640` for a quick check).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, get_linear_schedule_with_warmup, set_seed

from kd_hf import DistillationTrainer
from kd_hf.cli import parse_recipe
from kd_hf.data import (
    DistillationDataCollator,
    label_names,
    load_offline_dataset,
    load_raw_datasets,
    tokenize_for_pair,
)
from kd_hf.models import load_model, load_processor
from kd_hf.pairing import build_student


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distill_text import logits_on  # noqa: E402


TEXTBREWER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".textbrewer")
TEXTBREWER_INSTALL = (
    ".venv/bin/pip install --target benchmarks/.textbrewer --no-deps -c .ci/constraints.txt "
    "textbrewer==0.2.1.post1 tensorboardX protobuf"
)

ALTERNATING_BATCHES = 12  # batches per round of the same-batch check

# TinyBERT's intermediate losses as `fidelity.py` measures them on the ALBERT student: attention maps (KL, heads
# averaged) and hidden states (MSE through a learned projection), beside the soft labels. The layers are paired by the
# recipe's `layer_map` (`uniform` unless a `--layer_map` on the command line says otherwise).
INTERMEDIATE = ["--loss_type", "soft_label", "attention", "hidden_state", "--loss_weights", "1", "1", "1",
                "--attention_loss", "kl", "--attention_heads", "average", "--hidden_state_loss", "mse"]  # fmt: skip

# name: (row label, kd_hf recipe overrides or a runner name)
VARIANTS = {
    "plain": ("plain fine-tuning, no teacher (`Trainer`)", None),
    "live": ("kd_hf, live teacher", ["--teacher_cache", "false"]),
    "live_bf16": ("kd_hf, live teacher in bf16 (`teacher_dtype: bfloat16`)", ["--teacher_cache", "false",
                                                                               "--teacher_dtype", "bfloat16"]),
    "cached": ("kd_hf, cached teacher (`teacher_cache: true`)", ["--teacher_cache", "true"]),
    "cached_grouped": ("kd_hf, cached teacher, batches of like length (`train_sampling_strategy: group_by_length`)",
                       ["--teacher_cache", "true", "--train_sampling_strategy", "group_by_length"]),
    "attribution_1": ("kd_hf + attribution every step (cached teacher)", ["--teacher_cache", "true",
                      "--loss_type", "soft_label", "attribution", "--loss_weights", "1", "0.2",
                      "--attribution_every", "1"]),
    "attribution_4": ("kd_hf + attribution every 4 steps (cached teacher)", ["--teacher_cache", "true",
                      "--loss_type", "soft_label", "attribution", "--loss_weights", "1", "0.2",
                      "--attribution_every", "4"]),
    "intermediate": ("kd_hf + attention maps and hidden states (live teacher)", [*INTERMEDIATE, "--teacher_cache",
                     "false"]),
    "two_stage": ("kd_hf, two stages: the intermediate losses first, then the cached teacher", [*INTERMEDIATE,
                  "--teacher_cache", "true"]),
    "naive": ("naive HF-style KD `Trainer` (task guide), live teacher", None),
    "textbrewer": ("TextBrewer 0.2.1 `BasicDistiller`, live teacher", None),
}  # fmt: skip


class StepClock(TrainerCallback):
    """The time at which each optimizer step ends; steps are the gaps between them."""

    def __init__(self, steps: int, desc: str):
        self.ends = []
        self.bar = tqdm(total=steps, desc=desc, leave=False)

    def start(self):
        self.ends.append(time.perf_counter())

    def tick(self):
        self.ends.append(time.perf_counter())
        self.bar.update()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.tick()

    def steps(self, warmup: int) -> list[float]:
        self.bar.close()
        return [b - a for a, b in zip(self.ends, self.ends[1:])][warmup:]


class NaiveDistillationTrainer(Trainer):
    """The knowledge-distillation task guide's trainer (transformers docs, "Knowledge Distillation for Computer
    Vision"): the teacher runs inside `compute_loss` at every step."""

    def __init__(self, teacher_model=None, temperature=None, lambda_param=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher_model.to(self.args.device).eval()
        self.kl = nn.KLDivLoss(reduction="batchmean")
        self.temperature = temperature
        self.lambda_param = lambda_param

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student_output = model(**inputs)
        with torch.no_grad():
            teacher_output = self.teacher(**inputs)
        soft_teacher = F.softmax(teacher_output.logits / self.temperature, dim=-1)
        soft_student = F.log_softmax(student_output.logits / self.temperature, dim=-1)
        distillation_loss = self.kl(soft_student, soft_teacher) * (self.temperature**2)
        loss = (1.0 - self.lambda_param) * student_output.loss + self.lambda_param * distillation_loss
        return (loss, student_output) if return_outputs else loss


def adamw_like_trainer(model: nn.Module, args) -> torch.optim.AdamW:
    """Trainer's optimizer: AdamW, no weight decay on biases and LayerNorm weights."""
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon)  # fmt: skip


def textbrewer_distiller(teacher, student, args, steps: int, output_dir: str):
    """TextBrewer's `BasicDistiller` with the same loss as kd_hf's soft labels.

    TextBrewer's `ce` KD loss is `-sum p_T log p_S` at temperature T without the T^2 factor, so its weight is
    `(1 - alpha) * T^2`; its hard-label loss is the student's own cross-entropy (`outputs.loss`), weighted `alpha`.
    """
    if TEXTBREWER_DIR not in sys.path:
        sys.path.insert(0, TEXTBREWER_DIR)
    import textbrewer

    temperature, alpha = args.temperature, args.alpha
    return textbrewer.BasicDistiller(
        train_config=textbrewer.TrainingConfig(device="cpu", log_dir=None, output_dir=output_dir, ckpt_steps=steps),
        distill_config=textbrewer.DistillationConfig(
            temperature=temperature, kd_loss_type="ce", kd_loss_weight=(1 - alpha) * temperature**2,
            hard_label_weight=alpha,
        ),
        model_T=teacher, model_S=student,
        adaptor_T=lambda batch, outputs: {"logits": outputs.logits},
        adaptor_S=lambda batch, outputs: {"logits": outputs.logits, "losses": outputs.loss},
    )  # fmt: skip


def run_textbrewer(teacher, student, train, collator, args, steps: int, clock: StepClock, output_dir: str):
    """Train `student` with TextBrewer, its own loop, the same optimizer and schedule as `Trainer`."""
    from torch.utils.data import DataLoader

    distiller = textbrewer_distiller(teacher, student, args, steps, output_dir)

    names = ["input_ids", "attention_mask", "token_type_ids", "labels"]
    rows = train.select_columns([name for name in names if name in train.column_names])
    loader = DataLoader(rows, batch_size=args.per_device_train_batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    optimizer = adamw_like_trainer(student, args)
    original_zero_grad = optimizer.zero_grad

    def zero_grad(*a, **k):  # TextBrewer calls it once per step, right after the update and the scheduler
        original_zero_grad(*a, **k)
        clock.tick()

    optimizer.zero_grad = zero_grad
    os.makedirs(output_dir, exist_ok=True)
    clock.start()
    with distiller:
        distiller.train(
            optimizer, loader, num_steps=steps, max_grad_norm=args.max_grad_norm,
            scheduler_class=get_linear_schedule_with_warmup,
            scheduler_args={"num_warmup_steps": args.warmup_steps, "num_training_steps": steps},
        )  # fmt: skip


def alternating(teacher_path: str, args, train, collator, labels, rounds: int, num_batches: int) -> dict:
    """The three live-teacher losses on the same batches, taking turns batch by batch (rotating who goes first):
    forward and backward of the student and the teacher's forward, without data loading or the update. Load from
    other processes then falls on all three alike. Median seconds per batch, after the first round."""
    set_seed(args.seed)
    student = build_student(args, None, labels).train()
    size = args.per_device_train_batch_size
    batches = [
        collator([train[i] for i in range(start, start + size)]) for start in range(0, size * num_batches, size)
    ]
    kd = DistillationTrainer(model=student, teacher_model=load_model(teacher_path), args=args, data_collator=collator)
    naive = NaiveDistillationTrainer(load_model(teacher_path), args.temperature, 1 - args.alpha, model=student,
                                     args=args, data_collator=collator)  # fmt: skip
    losses = {
        "live": lambda batch: kd.compute_loss(student, batch),
        "naive": lambda batch: naive.compute_loss(student, batch),
    }
    try:
        distiller = textbrewer_distiller(load_model(teacher_path), student, args, 1, args.output_dir)
        losses["textbrewer"] = lambda batch: distiller.train_on_batch(batch, {})[0]
    except ImportError:
        pass
    times = {name: [] for name in losses}
    turn = 0
    for round_ in tqdm(range(rounds), desc="alternating", leave=False):
        for batch in batches:
            names = list(losses)
            turn += 1
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                start = time.perf_counter()
                losses[name](dict(batch)).backward()
                student.zero_grad(set_to_none=True)
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--recipe", default="recipes/offline_text_soft_labels.yaml")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the median")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="outputs/benchmark-overhead")
    parser.add_argument("--alternating_rounds", type=int, default=3, help="0 skips the same-batch check")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--first_stage", type=float, default=1 / 6, help="`two_stage`: share of intermediate steps")
    parser.add_argument(
        "--student_attention", default=None, choices=["eager", "sdpa"],
        help="the student's attention kernel in every variant (default: its config's; the attention loss switches to "
        "eager, which under bf16 autocast on a CPU is faster than sdpa: give `eager` to compare like with like)",
    )  # fmt: skip
    cli, recipe_overrides = parser.parse_known_args()  # any other `--field value` overrides the recipe
    if cli.steps <= cli.warmup + 1:
        parser.error(f"--steps must be larger than --warmup + 1 ({cli.warmup + 1}).")
    if not 0 < cli.first_stage < 1:
        parser.error(f"--first_stage is a share of the steps, between 0 and 1 (a sixth: {1 / 6:.4f}).")
    if cli.threads:
        torch.set_num_threads(cli.threads)

    overrides = ["--teacher_model_name_or_path", cli.teacher, "--max_steps", str(cli.steps)]
    overrides += ["--warmup_steps", str(cli.steps // 10), "--save_strategy", "no", "--eval_strategy", "no"]
    overrides += ["--disable_tqdm", "true", "--logging_steps", "50", "--seed", str(cli.seed), *recipe_overrides]
    base_args = parse_recipe([cli.recipe, *overrides, "--output_dir", cli.output_dir])

    tokenizer = load_processor(cli.teacher)
    collator = DistillationDataCollator(tokenizer)
    train_raw, _ = load_raw_datasets(base_args)
    labels = label_names(train_raw, base_args.label_column)
    train = tokenize_for_pair(train_raw, tokenizer, text_columns=base_args.text_columns, max_length=64)
    test = tokenize_for_pair(load_offline_dataset("rotten_tomatoes")["test"], tokenizer, max_length=64)
    test_labels = torch.tensor(test["labels"])
    teacher_predictions = logits_on(load_model(cli.teacher), test, collator).argmax(-1)
    load_before = os.getloadavg()

    rows = []
    for name in tqdm(cli.variants, desc="variants"):
        label, variant_overrides = VARIANTS[name]
        output_dir = os.path.join(cli.output_dir, name)
        if name == "two_stage":
            # That share of the measured steps, which start after the warm-up.
            first = str(cli.warmup + round((cli.steps - cli.warmup) * cli.first_stage))
            variant_overrides = [*variant_overrides, "--loss_steps", "0", first, first]
            label = f"{label} (the first {first} of {cli.steps} steps)"
        args = parse_recipe([cli.recipe, *overrides, "--output_dir", output_dir, *(variant_overrides or [])])
        set_seed(cli.seed)
        student = build_student(args, None, labels)  # the same initialisation for every variant
        if cli.student_attention:
            student.set_attn_implementation(cli.student_attention)
        teacher = None if name == "plain" else load_model(cli.teacher)  # fresh: `teacher_dtype` casts in place
        clock = StepClock(cli.steps, name)
        common = dict(model=student, args=args, train_dataset=train, processing_class=tokenizer,
                      data_collator=collator, callbacks=[clock])  # fmt: skip
        row = {"variant": name, "label": label}
        start = time.perf_counter()
        try:
            if name == "textbrewer":
                row["setup_s"] = 0.0
                run_textbrewer(teacher, student, train, collator, args, cli.steps, clock, output_dir)
            else:
                if name == "plain":
                    trainer = Trainer(**common)
                elif name == "naive":
                    trainer = NaiveDistillationTrainer(teacher, args.temperature, 1 - args.alpha, **common)
                else:
                    trainer = DistillationTrainer(teacher_model=teacher, **common)
                row["setup_s"] = time.perf_counter() - start
                trainer.train()
        except Exception as error:  # a peer that cannot run here keeps its row, with the reason
            clock.bar.close()
            reason = f"{type(error).__name__}: {error}"
            if name == "textbrewer" and isinstance(error, ImportError):
                reason += f" (install it apart from the main environment: {TEXTBREWER_INSTALL})"
            row["error"] = reason
            print(f"{name}: could not run: {reason}", flush=True)
            rows.append(row)
            continue
        steps = clock.steps(cli.warmup)
        row["s_per_step"], row["mean_s_per_step"] = statistics.median(steps), statistics.mean(steps)
        predictions = logits_on(student, test, collator).argmax(-1)
        row["accuracy"] = (predictions == test_labels).float().mean().item()
        row["agreement"] = (predictions == teacher_predictions).float().mean().item()
        print(f"{name}: {row['s_per_step']:.3f} s/step, accuracy {row['accuracy']:.3f}", flush=True)
        rows.append(row)
        del student, teacher

    plain = next((r["s_per_step"] for r in rows if r["variant"] == "plain" and "s_per_step" in r), None)
    plain_mean = next((r["mean_s_per_step"] for r in rows if r["variant"] == "plain" and "s_per_step" in r), None)
    for row in rows:
        if plain and "s_per_step" in row:
            row["ratio_to_plain"] = row["s_per_step"] / plain
            row["mean_ratio_to_plain"] = row["mean_s_per_step"] / plain_mean
    meta = {
        "steps": cli.steps, "warmup": cli.warmup, "batch_size": base_args.per_device_train_batch_size,
        "max_length": base_args.max_length, "train_examples": len(train), "test_examples": len(test),
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "torch": torch.__version__,
        "teacher_test_accuracy": (teacher_predictions == test_labels).float().mean().item(),
    }  # fmt: skip
    same_batches = {}
    if cli.alternating_rounds > 1:
        live_args = parse_recipe([cli.recipe, *overrides, "--output_dir", cli.output_dir, *VARIANTS["live"][1]])
        same_batches = alternating(
            cli.teacher, live_args, train, collator, labels, cli.alternating_rounds, ALTERNATING_BATCHES
        )
    os.makedirs(cli.output_dir, exist_ok=True)
    with open(os.path.join(cli.output_dir, "overhead.json"), "w") as file:
        json.dump({"meta": meta, "rows": rows, "alternating_same_batches_s": same_batches}, file, indent=2)

    print(
        f"\n{cli.steps} steps of {meta['batch_size']} (median s/step after {cli.warmup}), max_length "
        f"{meta['max_length']}, {meta['train_examples']} training snippets; accuracy on {meta['test_examples']} "
        f"test snippets (teacher {meta['teacher_test_accuracy']:.3f}); {meta['torch_threads']} CPU threads, load "
        f"average {load_before[0]:.2f} before / {meta['load_average_after'][0]:.2f} after\n"
    )
    header = ["run", "s/step (median)", "× plain", "s/step (mean)", "× plain (mean)", "set-up (s)", "test accuracy"]
    print("| " + " | ".join([*header, "agreement with teacher"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for row in rows:
        if "error" in row:
            print(f"| {row['label']} |" + " – |" * (len(header) - 1) + f" could not run: {row['error']} |")
            continue
        ratios = [f"{row[key]:.2f}×" if key in row else "–" for key in ("ratio_to_plain", "mean_ratio_to_plain")]
        print(
            f"| {row['label']} | {row['s_per_step']:.3f} | {ratios[0]} | {row['mean_s_per_step']:.3f} | {ratios[1]} "
            f"| {row['setup_s']:.1f} | {row['accuracy']:.3f} | {row['agreement']:.3f} |"
        )

    if same_batches:
        print(
            f"\nSame {ALTERNATING_BATCHES} batches, taking turns, {cli.alternating_rounds - 1} measured rounds (student forward + "
            "backward with the live teacher's forward; no data loading, no update):\n"
        )
        print("| live-teacher loss | s/batch (median) | × kd_hf |")
        print("|---|---|---|")
        for name, seconds in same_batches.items():
            print(f"| {VARIANTS[name][0]} | {seconds:.3f} | {seconds / same_batches['live']:.2f}× |")

    # Median steps, as asked; attribution every 4 steps by the mean, since its median is a step without attribution.
    median = {row["variant"]: row["ratio_to_plain"] for row in rows if "ratio_to_plain" in row}
    mean = {row["variant"]: row["mean_ratio_to_plain"] for row in rows if "mean_ratio_to_plain" in row}
    aims = [
        ("cached teacher ≤ 1.10 × plain (median)", lambda: median["cached"] <= 1.10, "cached"),
        ("live teacher no slower than the naive trainer (median)", lambda: median["live"] <= median["naive"],
         "live", "naive"),
        ("live teacher faster than TextBrewer (median)", lambda: median["live"] < median["textbrewer"],
         "live", "textbrewer"),
        ("bf16 live teacher no slower than the naive trainer (median)",
         lambda: median["live_bf16"] <= median["naive"], "live_bf16", "naive"),
        ("bf16 live teacher faster than TextBrewer (median)", lambda: median["live_bf16"] < median["textbrewer"],
         "live_bf16", "textbrewer"),
        ("attribution every 4 steps ≤ 1.5 × plain (mean)", lambda: mean["attribution_4"] <= 1.5, "attribution_4"),
        ("two stages ≤ 1.5 × plain (mean)", lambda: mean["two_stage"] <= 1.5, "two_stage"),
    ]  # fmt: skip
    print()
    for aim, check, *needed in aims:
        verdict = ("met" if check() else "missed") if all(n in median for n in needed) else "not measured"
        print(f"- {aim}: {verdict}")


if __name__ == "__main__":
    main()
