"""A pretrained student trained through a LoRA adapter vs the same student with all its weights trained.

Both students are all-MiniLM-L6-v2 (not fine-tuned) with a new head, distilled from the fine-tuned MiniLM teacher
on soft labels with the cached teacher, same data, steps and batch (`recipes/offline_text_lora.yaml`); the full
student trains every weight at the usual fine-tuning rate (5e-5), the LoRA student rank-8 adapters on queries and
values plus the head (5e-4). Accuracy and agreement with the teacher are on the validation split.

    python benchmarks/peft_student.py --teacher outputs/minilm-rotten-tomatoes --max_steps 300
"""

import argparse
import json
import os

from distill_text import StepTimer

from kd_hf import run
from kd_hf.cli import parse_recipe


VARIANTS = {
    "full weights": ["--peft_config", "null", "--learning_rate", "5e-5"],
    "LoRA r=8 (query, value) + head": [],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/minilm-rotten-tomatoes")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--output_dir", default="outputs/benchmark-peft")
    options = parser.parse_args()

    rows = []
    for name, overrides in VARIANTS.items():
        folder = os.path.join(options.output_dir, name.split()[0].lower())
        config = parse_recipe([
            "recipes/offline_text_lora.yaml", "--teacher_model_name_or_path", options.teacher,
            "--max_steps", str(options.max_steps), "--output_dir", folder,
            "--save_strategy", "no", "--explanation_examples", "0", "--disable_tqdm", "true", *overrides,
        ])  # fmt: skip
        timer = StepTimer()
        trainer = run.distill(config, callbacks=[timer])
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        with open(os.path.join(folder, "eval_results.json")) as file:
            student = json.load(file)["student"]
        rows.append((name, trainable, total, timer.median(), student["accuracy"], student["top1_agreement"]))

    print(f"\nMiniLM student distilled from the MiniLM teacher, {options.max_steps} steps of 32 (validation split)\n")
    print("| student | trainable parameters | s/step (median) | accuracy | agreement with the teacher |")
    print("|---|---|---|---|---|")
    for name, trainable, total, seconds, accuracy, agreement in rows:
        print(
            f"| {name} | {trainable:,} of {total:,} ({trainable / total:.2%}) | {seconds:.3f} | {accuracy:.3f} | {agreement:.3f} |"
        )


if __name__ == "__main__":
    main()
