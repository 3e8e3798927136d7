"""What the CPU machines cannot check, on one NVIDIA GPU in under ten minutes, as one table (issue 18).

Each row is a real `accelerate launch -m kd_hf.cli distill` of a shipped recipe, cut to a few steps on a small slice:

- the SST-2 pairing (`recipes/sst2_bert_base.yaml`: BERT-base into its 6 even layers) and the CIFAR-10 pairing
  (`recipes/cifar10_vit.yaml`: ViT-base likewise), bf16 mixed precision as the recipes set it;
- the SST-2 pairing with the teacher loaded in bf16 (`teacher_dtype: bfloat16`);
- the SST-2 pairing under `recipes/accelerate/deepspeed_zero3.yaml` (teacher sharded by `prepare_deepspeed`) and
  under `recipes/accelerate/fsdp.yaml`, each also with a half-width student, whose hidden-state projections shard
  with it, each with `--num_processes 1`;
- the attribution loss (a double backward) on the GPU;

then the throughput of kd_hf's batched integrated gradients against a per-example captum loop on the SST-2 teacher.

When the Hub is unreachable (or with `--offline`), the models are built from configs of the same shapes (BERT-base
with the offline MiniLM tokenizer, which has BERT's uncased vocabulary; ViT-base at 224 x 224) and the data is
synthetic: the rows then check that everything runs, and their accuracies mean nothing.

    bash benchmarks/gpu_check.sh                   # Hub models and data when reachable
    python benchmarks/gpu_check.py --offline       # config-built models, synthetic data

`--smoke` runs the same code on CPU with tiny models and skips what needs a GPU (tests/test_gpu_check.py).
The table also goes to `OUTPUT_DIR/gpu_check.json`.
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch


RECIPES = {"text": "recipes/sst2_bert_base.yaml", "vision": "recipes/cifar10_vit.yaml"}
# BERT-base's teacher layers narrowed to half its width (`model_init: teacher_layers` with a narrower config).
HALF_WIDTH = '{"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536}'
# A student half the teacher's width: the hidden-state projections have parameters, sharded with the student.
HIDDEN_STATES_HALF_WIDTH = {"model_config": HALF_WIDTH, "loss_type": ["soft_label", "hidden_state"],
                            "loss_weights": ["1", "1"]}  # fmt: skip
WORDS = "good bad great awful fine dull moving boring sharp flat warm cold bright grim funny tedious".split()


def hub_reachable(model_id: str) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import model_info

        model_info(model_id, timeout=10)
        return True
    except Exception:
        return False


def synthetic_text(folder: str, rows: int) -> dict:
    """A CSV dataset of random word strings labelled `negative`/`positive`; the recipe's data fields for it."""
    rng = random.Random(0)
    os.makedirs(folder, exist_ok=True)
    files = {}
    for split, n in (("train", rows), ("validation", max(rows // 4, 16))):
        files[split] = os.path.join(folder, f"{split}.csv")
        with open(files[split], "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["sentence", "label"])
            for _ in range(n):
                writer.writerow(
                    [" ".join(rng.choices(WORDS, k=rng.randint(4, 24))), rng.choice(["negative", "positive"])]
                )
    return {"dataset_name": "csv", "data_files": json.dumps(files), "eval_split": "validation"}


def synthetic_images(folder: str, rows: int, size: int) -> dict:
    """An `imagefolder` dataset of noisy RGB images in 10 class folders; the recipe's data fields for it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", rows), ("test", max(rows // 4, 20))):
        for i in range(n):
            label = i % 10
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[: size // 4, : size // 4] = label * 25  # a class-coloured corner
            os.makedirs(os.path.join(folder, split, str(label)), exist_ok=True)
            Image.fromarray(pixels).save(os.path.join(folder, split, str(label), f"{i}.png"))
    files = {split: os.path.join(folder, split, "**", "*.png") for split in ("train", "test")}
    return {
        "dataset_name": "imagefolder",
        "data_files": json.dumps(files),
        "image_column": "image",
        "eval_split": "test",
    }


def config_built_text_teacher(folder: str, tiny: bool) -> str:
    """BERT-base shapes (or a tiny BERT), random weights, the offline MiniLM tokenizer, the recipe's label names."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kd_hf.data.offline import offline_model_path

    shape = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128) if tiny else {}
    config = BertConfig(num_labels=2, id2label={0: "LABEL_0", 1: "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1},
                        **shape)  # fmt: skip
    path = os.path.join(folder, "text-teacher")
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(offline_model_path("offline:all-MiniLM-L6-v2")).save_pretrained(path)
    return path


def config_built_vision_teacher(folder: str, tiny: bool) -> str:
    """ViT-base at 224 x 224 (or a tiny ViT at 32 x 32), random weights, 10 classes named as the image folders."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    size = 32 if tiny else 224
    shape = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128, patch_size=8)
    labels = {i: str(i) for i in range(10)}
    config = ViTConfig(image_size=size, num_labels=10, id2label=labels, label2id={v: k for k, v in labels.items()},
                       **(shape if tiny else {}))  # fmt: skip
    path = os.path.join(folder, "vision-teacher")
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(path)
    return path


def assets(cli) -> dict:
    """Per modality: the teacher this run uses, the recipe flags that point the recipe at it and its data, and where
    they came from."""
    import yaml

    folder = os.path.join(cli.output_dir, "assets")
    os.makedirs(folder, exist_ok=True)
    found = {}
    for modality, recipe in RECIPES.items():
        with open(recipe) as file:
            teacher = yaml.safe_load(file)["teacher_model_name_or_path"]
        if not cli.offline and hub_reachable(teacher):
            found[modality] = {"source": f"Hub: {teacher}", "teacher": teacher, "flags": {}}
            continue
        if modality == "text":
            path = config_built_text_teacher(folder, cli.smoke)
            data = synthetic_text(os.path.join(folder, "text-data"), cli.train_examples)
        else:
            path = config_built_vision_teacher(folder, cli.smoke)
            size = 32 if cli.smoke else 224
            data = synthetic_images(os.path.join(folder, "image-data"), cli.train_examples, size)
        flags = {"teacher_model_name_or_path": path, **data}
        found[modality] = {"source": "config-built, synthetic data", "teacher": path, "flags": flags}
    return found


def distill(cli, name: str, modality: str, source: dict, flags: dict, accelerate_config: str | None = None) -> dict:
    """One `accelerate launch -m kd_hf.cli distill` on one process; its status, time and figures."""
    output_dir = os.path.join(cli.output_dir, name)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--dynamo_backend", "no"]  # fmt: skip
    launch += ["--config_file", accelerate_config] if accelerate_config else []
    launch += ["--cpu"] if cli.smoke else []
    fields = {
        **source["flags"], "output_dir": output_dir, "max_steps": cli.steps, "max_train_samples": cli.train_examples,
        "max_eval_samples": cli.eval_examples, "eval_strategy": "no", "save_strategy": "no",
        "explanation_examples": 0, "report_to": "none", "dataloader_num_workers": 0, **flags,
    }  # fmt: skip
    if cli.smoke:
        fields |= {"bf16": False, "use_cpu": True}
    command = [*launch, "-m", "kd_hf.cli", "distill", RECIPES[modality], "--overwrite_output_dir", "true"]
    for key, value in fields.items():
        command += [f"--{key}", *(value if isinstance(value, list) else [str(value)])]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    row = {"check": name, "source": source["source"], "seconds": time.perf_counter() - started}
    if result.returncode != 0:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "stderr.txt"), "w") as file:
            file.write(result.stderr)
        # The run's own exception, not the launcher's `CalledProcessError` that follows it.
        errors = [line for line in result.stderr.splitlines() if "Error" in line and "CalledProcessError" not in line]
        return row | {"status": "failed", "error": (errors or ["(see stderr.txt)"])[-1].strip()[:200]}
    with open(os.path.join(output_dir, "all_results.json")) as file:
        results = json.load(file)
    return row | {
        "status": "ok",
        "train_samples_per_second": results.get("train_samples_per_second"),
        "eval_accuracy": results.get("eval_accuracy"),
        "eval_teacher_agreement": results.get("eval_teacher_agreement"),
    }


def explanation_throughput(cli, source: dict) -> list[dict]:
    """Integrated gradients (32 steps) of the SST-2 teacher: kd_hf's batched `explain_text` against a per-example
    captum loop, on the same texts and device."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from explain_throughput import per_example_loop

    from kd_hf.explain import explain_text
    from kd_hf.models import load_model, load_processor

    teacher = source["teacher"]
    device = "cpu" if cli.smoke else "cuda"
    model = load_model(teacher).to(device).eval()
    tokenizer = load_processor(teacher)
    rng = random.Random(1)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(4, 40))) for _ in range(cli.explain_examples)]
    per_example_loop(model, tokenizer, texts[:2], 32, 128)  # warm-up
    explain_text(model, tokenizer, texts[:2], n_steps=32, progress=False)

    def timed(function, *args, **kwargs):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = function(*args, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    loop, loop_seconds = timed(per_example_loop, model, tokenizer, texts, 32, 128)
    rows = [{"check": "IG, per-example captum loop", "status": "ok", "seconds": loop_seconds}]
    for batch_size in (16, 64):
        explanations, seconds = timed(explain_text, model, tokenizer, texts, n_steps=32, batch_size=batch_size,
                                      progress=False)  # fmt: skip
        pairs = zip(loop, [explanation.scores for explanation in explanations])
        pearson_min = min(float(np.corrcoef(a, b)[0, 1]) for a, b in pairs if len(a) > 1)
        rows.append({"check": f"IG, kd_hf batched ({batch_size} texts per batch)", "status": "ok",
                     "seconds": seconds, "speed_up": loop_seconds / seconds, "pearson_min": pearson_min})  # fmt: skip
    for row in rows:
        row["source"] = source["source"]
        row["texts_per_second"] = len(texts) / row["seconds"]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="outputs/gpu-check")
    parser.add_argument("--offline", action="store_true", help="config-built models and synthetic data")
    parser.add_argument("--smoke", action="store_true", help="tiny models on CPU; skips what needs a GPU")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train_examples", type=int, default=640)
    parser.add_argument("--eval_examples", type=int, default=256)
    parser.add_argument("--explain_examples", type=int, default=64)
    cli = parser.parse_args()
    if not cli.smoke and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_check.py needs an NVIDIA GPU and a CUDA build of torch (or --smoke on CPU).")
    if cli.smoke:
        cli.offline = True
    found = assets(cli)
    text, vision = found["text"], found["vision"]
    checks = [
        ("sst2-pairing-bf16", "text", text, {}, None),
        ("cifar10-pairing-bf16", "vision", vision, {}, None),
        ("sst2-bf16-teacher", "text", text, {"teacher_dtype": "bfloat16"}, None),
        ("sst2-attribution", "text", text, {"loss_type": ["soft_label", "attribution"], "loss_weights": ["1", "1"]},
         None),
        ("sst2-deepspeed-zero3", "text", text, {}, "recipes/accelerate/deepspeed_zero3.yaml"),
        ("sst2-fsdp", "text", text, {}, "recipes/accelerate/fsdp.yaml"),
        ("sst2-fsdp-hidden-states", "text", text, HIDDEN_STATES_HALF_WIDTH, "recipes/accelerate/fsdp.yaml"),
        ("sst2-zero3-hidden-states", "text", text, HIDDEN_STATES_HALF_WIDTH, "recipes/accelerate/deepspeed_zero3.yaml"),
    ]  # fmt: skip
    rows = []
    for name, modality, source, flags, accelerate_config in checks:
        if cli.smoke and accelerate_config:
            rows.append({"check": name, "source": source["source"], "status": "skipped (needs a GPU)"})
            continue
        print(f"[gpu_check] {name} ...", flush=True)
        rows.append(distill(cli, name, modality, source, flags, accelerate_config))
    rows += explanation_throughput(cli, text)

    device = "CPU (smoke)" if cli.smoke else torch.cuda.get_device_name(0)
    with open(os.path.join(cli.output_dir, "gpu_check.json"), "w") as file:
        json.dump({"device": device, "torch": torch.__version__, "rows": rows}, file, indent=2)
    print(f"\nkd_hf GPU check on {device}, torch {torch.__version__}\n")
    print(
        "| check | models and data | status | seconds | train samples/s | eval accuracy | agreement | IG: × the loop |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def number(value, spec):
        return "–" if value is None else format(value, spec)

    for row in rows:
        status = row["status"] + (f": {row['error']}" if "error" in row else "")
        print(
            f"| {row['check']} | {row['source']} | {status} | {number(row.get('seconds'), '.1f')} | "
            f"{number(row.get('train_samples_per_second'), '.1f')} | {number(row.get('eval_accuracy'), '.3f')} | "
            f"{number(row.get('eval_teacher_agreement'), '.3f')} | {number(row.get('speed_up'), '.2f')}"
            + (f" (word scores vs the loop: r ≥ {row['pearson_min']:.4f})" if "pearson_min" in row else "")
            + " |"
        )
    failed = [row["check"] for row in rows if row["status"] == "failed"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks ran" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
