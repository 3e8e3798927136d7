"""Students that explain like their teachers, on the offline vision default. Prints one Markdown table.

Teacher: the MNIST ViT of `recipes/offline_vision_teacher.yaml` (`kd-hf train` it first). Students: the recipes
`offline_vision.yaml` (soft labels), `offline_vision_intermediate.yaml` (+ attention + hidden states) and
`offline_vision_attribution.yaml` (+ attribution), one run each. For each student: accuracy and top-1 agreement on
the validation split, seconds per step, and, on `--explain_examples` test digits, the Spearman rho of its integrated
gradients with the teacher's (pooled to the 7x7 patch grid; random attributions in brackets) and the deletion AUC
of its own explanations.

    python benchmarks/distill_vision.py --teacher outputs/vit-mnist [--field value ...]
"""

import argparse

import numpy as np
import torch

from kd_hf import run
from kd_hf.cli import parse_recipe
from kd_hf.data import load_offline_dataset, preprocess_images
from kd_hf.explain.compare import compare_explanations
from kd_hf.models import load_model, load_processor


RECIPES = {
    "kd_hf soft_label": "recipes/offline_vision.yaml",
    "+ attention + hidden_state": "recipes/offline_vision_intermediate.yaml",
    "+ attribution": "recipes/offline_vision_attribution.yaml",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="outputs/vit-mnist")
    parser.add_argument("--explain_examples", type=int, default=100)
    parser.add_argument("--output_dir", default="outputs/benchmark-distill-vision")
    cli, recipe_overrides = parser.parse_known_args()

    teacher = load_model(cli.teacher, image=True).eval()
    teacher.set_attn_implementation("eager")
    processor = load_processor(cli.teacher, image=True)
    test = load_offline_dataset("mnist")["test"].select(range(cli.explain_examples))
    pixels = torch.as_tensor(np.stack(preprocess_images(test, processor, num_channels=1)["pixel_values"]))

    rows, teacher_side = [], None
    for name, recipe in RECIPES.items():
        output_dir = f"{cli.output_dir}/{recipe.split('/')[-1].removesuffix('.yaml')}"
        overrides = ["--teacher_model_name_or_path", cli.teacher, "--output_dir", output_dir, "--save_strategy", "no"]
        overrides += ["--disable_tqdm", "true", *recipe_overrides]
        trainer = run.distill(parse_recipe([recipe, *overrides]))
        metrics = trainer.evaluate()
        runtime = next(log["train_runtime"] for log in trainer.state.log_history if "train_runtime" in log)
        step = runtime / trainer.state.global_step
        student = trainer.model.eval()
        student.set_attn_implementation("eager")
        comparison = compare_explanations(teacher, student, pixels, n_steps=16, teacher_explained=teacher_side)
        teacher_side = comparison["teacher"]
        rho = comparison["agreement"]["spearman"]
        rows.append([
            f"student, {name}", f"{metrics['eval_accuracy']:.3f}", f"{metrics['eval_teacher_agreement']:.3f}",
            f"{step:.3f}", f"{rho['mean']:.2f} [{rho['low']:.2f}, {rho['high']:.2f}] ({rho['random']:.2f})",
            f"{comparison['faithfulness']['student']['deletion_auc']['mean']:.3f}",
        ])  # fmt: skip
    teacher_deletion = comparison["faithfulness"]["teacher"]["deletion_auc"]["mean"]
    print(f"\nOffline vision default: MNIST ViT teacher, {cli.explain_examples} test digits explained, "
          f"teacher deletion AUC {teacher_deletion:.3f}\n")  # fmt: skip
    header = ["model", "validation accuracy", "agreement with teacher", "s/step (incl. evaluation)",
              "IG Spearman vs teacher [95% CI] (random)", "deletion AUC"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
