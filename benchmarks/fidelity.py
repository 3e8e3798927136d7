"""Which levers make a small student predict *and explain* like its teacher? The issue-14 ablation, one table.

Each variant is a recipe (`recipes/offline_text_soft_labels.yaml` or `recipes/offline_vision.yaml`) with a few fields
changed, trained with `kd-hf distill` (`plain`: `kd-hf train` of the same student, cross-entropy alone) once per seed;
its report (`eval_results.json`) is made on the held-out test split (`report_split`), which no choice was tuned on,
with integrated-gradients agreement on `--explain_examples` test examples. Validation accuracy (what training evaluated
on, and what the choice of levers may look at) is reported beside it.

    python benchmarks/fidelity.py --modality text --seeds 42 43 44            # make benchmark-fidelity
    python benchmarks/fidelity.py --modality text --variants soft_label embedding_init --seeds 42
    python benchmarks/fidelity.py --modality text --variants soft_label --seeds 42 --alpha 0   # any recipe field

Recipe fields given on the command line change every variant run, over the variant's own; a run records them, and
the table shows it apart from the variant's runs without them.

Writes `benchmarks/results/fidelity_<modality>.json` (per variant and seed: test accuracy, teacher accuracy,
agreement, parameters, latency at batch 32, seconds per optimizer step averaged over the run and its ratio to `plain`,
the run's wall time (teacher caches, training, report), IG Spearman with its 95% CI and chance level, validation
accuracy) and prints the table (mean ± std over seeds; times as medians over seeds).
"""

import argparse
import copy
import fcntl
import json
import os
import statistics
import time

import torch
from distill_text import StepTimer  # benchmarks/ is on the path when a script there runs

from kd_hf.cli import parse_recipe
from kd_hf.evaluation import evaluate_student
from kd_hf.run import distill, train


RECIPES = {"text": "recipes/offline_text_soft_labels.yaml", "vision": "recipes/offline_vision.yaml"}
TEACHERS = {"text": "outputs/minilm-rotten-tomatoes", "vision": "outputs/vit-mnist"}
# Each lever, alone on top of soft labels, then together (`final`). Fields as on the command line.
IG_MATCHING = ["--loss_type", "soft_label", "attribution", "--loss_weights", "1", "0.2"]
IG_MATCHING += ["--attribution_method", "integrated_gradients", "--attribution_n_steps", "4"]
# Within the step budget (<= 1.5x plain on average): 2 points on 8 examples of the batch, every 4th step, with 4x the
# weight (the same average weight over the run).
IG_MATCHING_LIGHT = ["--loss_type", "soft_label", "attribution", "--loss_weights", "1", "0.8"]
IG_MATCHING_LIGHT += ["--attribution_method", "integrated_gradients", "--attribution_n_steps", "2"]
IG_MATCHING_LIGHT += ["--attribution_batch_size", "8", "--attribution_every", "4"]
# TinyBERT/MiniLM-style intermediate losses (`recipes/offline_text_intermediate.yaml`): attention maps (KL, heads
# averaged) and hidden states (MSE through a learned projection), student layers 1, 2 <- teacher layers 3, 6. They need
# the live teacher at every step.
INTERMEDIATE = ["--loss_type", "soft_label", "attention", "hidden_state", "--loss_weights", "1", "1", "1"]
INTERMEDIATE += ["--layer_map", "uniform", "--attention_loss", "kl", "--attention_heads", "average"]
INTERMEDIATE += ["--hidden_state_loss", "mse"]
DEEP = '{"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}'
NARROW = '{"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}'
TEACHER_NARROWED = ["--model_init", "teacher_layers", "--teacher_layers", "1", "5", "--model_config", NARROW,
                    "--learning_rate", "3e-4"]  # fmt: skip
ALBERT = ('{"model_type": "albert", "embedding_size": 64, "hidden_size": 224, "num_hidden_layers": 3, '
          '"num_hidden_groups": 3, "num_attention_heads": 4, "intermediate_size": 896, "hidden_act": "gelu", '
          '"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}')  # fmt: skip
IMDB_TRANSFER = ["--transfer_dataset_name", "offline:imdb_sentences", "--max_transfer_samples", "50000",
                 "--max_steps", "6000", "--warmup_steps", "600"]  # fmt: skip
ALBERT_IMDB = ["--embedding_init", "teacher", "--model_config", ALBERT, "--learning_rate", "3e-4", *IMDB_TRANSFER]
VARIANTS = {
    "plain": [],
    "soft_label": [],
    "embedding_init": ["--embedding_init", "teacher"],
    "augment": ["--augment_copies", "4"],
    "transfer_set": ["--transfer_dataset_name", "offline:rotten_tomatoes_plots"],
    "prune_vocabulary": ["--prune_vocabulary", "true"],
    "ig_matching": IG_MATCHING,
    "ig_matching_light": IG_MATCHING_LIGHT,
    "final": ["--embedding_init", "teacher", *IG_MATCHING_LIGHT],
    # What lifted the vision student (a heavier attribution weight), on `final`: 2 instead of 0.8.
    "final_w2": ["--embedding_init", "teacher", *IG_MATCHING_LIGHT, "--loss_weights", "1", "2"],
    "intermediate": INTERMEDIATE,
    # Minitron's initialisation: teacher layers 1 and 5 (of 0-5), narrowed to the student's width by the teacher's
    # activations (`model_init: teacher_layers` with a narrower `model_config`), at a fine-tuning learning rate.
    "teacher_narrowed": TEACHER_NARROWED,
    "teacher_narrowed_final": [*TEACHER_NARROWED, *IG_MATCHING_LIGHT],
    # Augmentation given the steps to use its 51k texts (4 epochs instead of 1), on teacher-initialised embeddings.
    "augment_long": ["--embedding_init", "teacher", "--augment_copies", "4", "--max_steps", "6000"],
    # The budget the pruned vocabulary frees (most of a 4.4M student is its 30k-token embedding table) spent on depth:
    # 4 layers of width 128 (twice the default), within the 5x size and speed budgets.
    "deep_pruned": ["--prune_vocabulary", "true", "--model_config", DEEP, "--embedding_init", "teacher"],
    "deep_pruned_final": [
        "--prune_vocabulary",
        "true",
        "--model_config",
        DEEP,
        "--embedding_init",
        "teacher",
        *IG_MATCHING_LIGHT,
    ],  # fmt: skip
    # 50,000 sentences of IMDB reviews as a transfer set (`offline:imdb_sentences`, the teacher's soft labels alone),
    # with the steps to use them (6,000 of 32: 3 epochs of the 60k texts), on two initialisations.
    "imdb_transfer": ["--embedding_init", "teacher", *IMDB_TRANSFER],
    "teacher_narrowed_imdb": [*TEACHER_NARROWED, *IMDB_TRANSFER],
    # The parameters of the word table moved into the layers: an ALBERT student (3.9M, 5.9x fewer) whose 64-wide
    # word table (the teacher's, projected) feeds 3 unshared layers of width 224, on the same transfer set.
    "albert_imdb": ALBERT_IMDB,
    # The same student on the teacher's soft labels alone (`alpha: 0`): Rotten Tomatoes' hard labels, which the teacher
    # contradicts on some training snippets, no longer pull the student away from it.
    "albert_imdb_soft": [*ALBERT_IMDB, "--alpha", "0"],
    # A reference, not a candidate: a student as large as the teacher, from the same pretrained MiniLM, distilled with
    # soft labels alone (400 steps at a fine-tuning learning rate). How close the data lets a student come.
    "teacher_sized": ["--model_init", "checkpoint", "--model_name_or_path", "offline:all-MiniLM-L6-v2"]
    + ["--model_config", "{}", "--learning_rate", "5e-5", "--alpha", "0.0", "--max_steps", "400"]
    + ["--warmup_steps", "40", "--eval_steps", "200"],
}
# Images are cheap to attribute: the vision levers match every step at weight 1 (`recipes/offline_vision_attribution.yaml`
# with input x gradient, and the same with integrated gradients, the method the reports judge by).
IXG_MATCHING_VISION = ["--loss_type", "soft_label", "attribution", "--loss_weights", "1", "1"]
IG_MATCHING_VISION = [
    *IXG_MATCHING_VISION,
    "--attribution_method",
    "integrated_gradients",
    "--attribution_n_steps",
    "4",
]
IG_MATCHING_VISION_W2 = [*IG_MATCHING_VISION, "--loss_weights", "1", "2"]  # the attribution weighted 2 (last wins)


def cached_for(steps: int) -> list[str]:
    """The teacher's attributions computed once (`teacher_cache`), `steps` optimizer steps with 10% warm-up."""
    return ["--teacher_cache", "true", "--max_steps", str(steps), "--warmup_steps", str(steps // 10)]


# The vision student is a ViT of width 96 (157k parameters, 3.4x fewer than the teacher). The `w64_` variants are the
# earlier default of width 64 (72k, 7.5x fewer): too few parameters to stay within a point of the teacher (issue 14)
# or for int8 to pay on disk (issue 17).
W64 = '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}'
VISION_LEVERS = {
    "plain": [],
    "soft_label": [],
    "ig_matching_light": IG_MATCHING_LIGHT,
    "ixg_matching": IXG_MATCHING_VISION,
    "ig_matching": IG_MATCHING_VISION,
}
# DistilBERT's initialisation: teacher layers 2 and 4, at the teacher's width (272k parameters, 2x fewer).
TEACHER_LAYERS = ["--model_init", "teacher_layers", "--teacher_layers_stride", "2", "--model_config", "{}"]
NARROW_VISION = '{"hidden_size": 96, "num_attention_heads": 3, "intermediate_size": 192}'
TEACHER_NARROWED_VISION = [*TEACHER_LAYERS, "--model_config", NARROW_VISION]
VISION_VARIANTS = {
    **{name: fields for name, fields in VISION_LEVERS.items() if name != "ig_matching_light"},
    # The teacher's IG computed once: the same student as `ig_matching` (seed 42), at half the time per step.
    "ig_matching_cached": [*IG_MATCHING_VISION, "--teacher_cache", "true"],
    # Twice the steps (seed 42 ran without the cache, which changes nothing), then three times the steps; or twice the
    # steps at twice the attribution weight (`recipes/offline_vision_explain.yaml`, chosen on validation IG rho).
    "ig_matching_long": [*IG_MATCHING_VISION, *cached_for(800)],
    "ig_matching_longer": [*IG_MATCHING_VISION, *cached_for(1200)],
    "ig_matching_long_w2": [*IG_MATCHING_VISION_W2, *cached_for(800)],
    "teacher_layers": TEACHER_LAYERS,
    # The same teacher layers narrowed to the default student's width (3 heads of the teacher's 32, not 4 of 24): the
    # default's 157k parameters, every weight a slice of the teacher's.
    "teacher_narrowed": TEACHER_NARROWED_VISION,
    # ... and under the IG matching of `recipes/offline_vision_explain.yaml`.
    "teacher_narrowed_explain": [*TEACHER_NARROWED_VISION, *IG_MATCHING_VISION_W2, *cached_for(800)],
    "teacher_layers_ig_matching": [*TEACHER_LAYERS, *IG_MATCHING_VISION],
    **{f"w64_{name}": ["--model_config", W64, *fields] for name, fields in VISION_LEVERS.items()},
}


def plain_of(variant: str) -> str:
    """The variant whose seconds per step are `variant`'s reference: `plain` of the same student."""
    return "w64_plain" if variant.startswith("w64_") else "plain"


def run_variant(cli, variant: str, fields: list[str], seed: int) -> dict:
    folder = os.path.join(cli.output_dir, cli.modality, f"{variant}-{seed}")
    common = [RECIPES[cli.modality], "--seed", str(seed), "--output_dir", folder, "--overwrite_output_dir", "true"]
    common += ["--save_strategy", "no", "--disable_tqdm", "true", "--explanation_examples", str(cli.explain_examples)]
    common += ["--global_examples", "0", "--teacher_model_name_or_path", cli.teacher]
    timer, start = StepTimer(), time.perf_counter()
    args = parse_recipe([*common, *fields, *cli.overrides])  # the command line's fields win over the variant's
    if variant == "plain":
        # The same student fine-tuned alone (the teacher's config made smaller, as the recipe builds it), then
        # reported against the teacher as `kd-hf distill` reports its students.
        plain = copy.copy(args)
        plain.model_name_or_path, plain.teacher_model_name_or_path = cli.teacher, None
        trainer = train(plain, callbacks=[timer])
        report = copy.copy(args)
        report.eval_split = args.report_split
        results = evaluate_student(
            trainer.model.eval(), cli.teacher, config=report, output_dir=folder,
            explanation_examples=cli.explain_examples, student_processor=trainer.processing_class,
            student_name=folder,
        )  # fmt: skip
    else:
        trainer = distill(args, callbacks=[timer])
        with open(os.path.join(folder, "eval_results.json")) as file:
            results = json.load(file)
    wall = time.perf_counter() - start  # teacher caches, training and the report
    validation = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry][-1]["eval_accuracy"]
    student, teacher = results["student"], results["teacher"]
    explanations = results.get("explanations") or {}
    spearman = (explanations.get("agreement") or {}).get("spearman") or {}
    return {
        "variant": variant,
        "overrides": cli.overrides,
        "seed": seed,
        "test_accuracy": student["accuracy"],
        "teacher_test_accuracy": teacher["accuracy"],
        "accuracy_ratio": student["accuracy"] / teacher["accuracy"],
        "agreement": student["top1_agreement"],
        "parameters": student["parameters"],
        "teacher_parameters": teacher["parameters"],
        "latency_ms_batch_32": student["latency_ms"].get("batch_32"),
        "teacher_latency_ms_batch_32": teacher["latency_ms"].get("batch_32"),
        "seconds_per_step": timer.mean(),
        "wall_seconds": wall,
        "ig_spearman": spearman.get("mean"),
        "ig_spearman_ci": [spearman.get("low"), spearman.get("high")],
        "ig_spearman_chance": spearman.get("random"),
        "explained_examples": explanations.get("num_examples"),
        "validation_accuracy": validation,
        "report_split": results["dataset"]["split"],
        "torch_threads": torch.get_num_threads(),
    }


def _spread(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _setting(row: dict) -> tuple:
    """What a run is a run of: its variant and the fields the command line changed on top of it."""
    return row["variant"], tuple(row.get("overrides", ()))


def _plain_steps(rows: list[dict], variant: str, overrides: tuple) -> list[float]:
    """Seconds per step of `variant`'s reference runs: `plain` of the same student, under the same command-line fields
    where it ran under them, else under none."""
    plain = [row for row in rows if row["variant"] == plain_of(variant)]
    same = [row for row in plain if tuple(row.get("overrides", ())) == overrides]
    return [row["seconds_per_step"] for row in same or [row for row in plain if not row.get("overrides")]]


def table(rows: list[dict]) -> str:
    header = ["variant", "test acc", "teacher", "student/teacher", "agreement", "params (teacher/student)"]
    header += ["latency b=32 ms (speed-up)", "s/step (× plain)", "run min", "IG ρ [95% CI] (chance)", "validation acc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = [*VARIANTS, *VISION_VARIANTS]  # the levers' order, whatever order the runs came in
    for variant, overrides in sorted(dict.fromkeys(map(_setting, rows)), key=lambda key: (order.index(key[0]), key)):
        runs = [row for row in rows if _setting(row) == (variant, overrides)]
        step = statistics.median(row["seconds_per_step"] for row in runs)
        plain = _plain_steps(rows, variant, overrides)
        ratio = f" ({step / statistics.median(plain):.2f}×)" if plain else ""
        low = statistics.mean(row["ig_spearman_ci"][0] for row in runs) if runs[0]["ig_spearman"] is not None else None
        high = statistics.mean(row["ig_spearman_ci"][1] for row in runs) if low is not None else None
        ig = _spread([row["ig_spearman"] for row in runs], 2)
        ig += f" [{low:.2f}, {high:.2f}] ({runs[0]['ig_spearman_chance']:.2f})" if low is not None else ""
        latency = statistics.median(row["latency_ms_batch_32"] for row in runs)
        walls = [row["wall_seconds"] / 60 for row in runs if "wall_seconds" in row]
        wall = f"{statistics.median(walls):.1f}" if walls else "–"
        speedup = statistics.median(row["teacher_latency_ms_batch_32"] / row["latency_ms_batch_32"] for row in runs)
        lines.append(
            "| " + " | ".join([
                " ".join([variant, *overrides]), _spread([r["test_accuracy"] for r in runs]), _spread([r["teacher_test_accuracy"] for r in runs]),
                _spread([r["accuracy_ratio"] for r in runs]), _spread([r["agreement"] for r in runs]),
                f"{runs[0]['teacher_parameters'] / runs[0]['parameters']:.1f}×", f"{latency:.1f} ({speedup:.1f}×)",
                f"{step:.3f}{ratio}", wall, ig, _spread([r["validation_accuracy"] for r in runs]),
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def record(path: str, row: dict, cli) -> list[dict]:
    """Add a run to the results file, replacing an earlier run of the same setting and seed and keeping the others
    (also those that another process running beside this one wrote since); returns every run."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = []
        if os.path.isfile(path):
            with open(path) as file:
                rows = [
                    old
                    for old in json.load(file)["runs"]
                    if (_setting(old), old["seed"]) != (_setting(row), row["seed"])
                ]
        rows.append(row)
        with open(path + ".tmp", "w") as file:
            json.dump({"recipe": RECIPES[cli.modality], "teacher": cli.teacher, "runs": rows}, file, indent=2)
        os.replace(path + ".tmp", path)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=list(RECIPES), default="text")
    parser.add_argument("--teacher", default=None, help="defaults to the modality's `make demo` teacher")
    parser.add_argument("--variants", nargs="+", default=None, help="default: every variant of the modality")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--explain_examples", type=int, default=200)
    parser.add_argument("--output_dir", default="outputs/benchmark-fidelity")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    cli, cli.overrides = parser.parse_known_args()
    cli.teacher = cli.teacher or TEACHERS[cli.modality]
    if cli.threads:
        torch.set_num_threads(cli.threads)
    variants = VARIANTS if cli.modality == "text" else VISION_VARIANTS
    names = cli.variants or list(variants)
    path = os.path.join(cli.results, f"fidelity_{cli.modality}.json")
    for name in names:
        for seed in cli.seeds:
            row = run_variant(cli, name, variants[name], seed)
            print(json.dumps(row), flush=True)
            rows = record(path, row, cli)
    print(table(rows))


if __name__ == "__main__":
    main()
