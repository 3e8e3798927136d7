import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_gpu_check_runs_its_rows_on_cpu_with_tiny_models(tmp_path):
    """The GPU script's own code (assets, launches, the throughput rows, the table) on CPU: what needs a GPU is
    skipped and said to be."""
    command = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--steps", "2", "--train_examples", "32",
               "--eval_examples", "16", "--explain_examples", "4", "--output_dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)

    failed_runs = "".join(path.read_text()[-3000:] for path in tmp_path.glob("*/stderr.txt"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-1000:] + failed_runs
    rows = {row["check"]: row for row in json.loads((tmp_path / "gpu_check.json").read_text())["rows"]}
    for check in ("sst2-pairing-bf16", "cifar10-pairing-bf16", "sst2-bf16-teacher", "sst2-attribution"):
        assert rows[check]["status"] == "ok" and rows[check]["train_samples_per_second"] > 0
    for check in ("sst2-deepspeed-zero3", "sst2-fsdp", "sst2-fsdp-hidden-states", "sst2-zero3-hidden-states"):
        assert rows[check]["status"] == "skipped (needs a GPU)"
    batched = rows["IG, kd_hf batched (16 texts per batch)"]
    assert batched["speed_up"] > 0 and batched["pearson_min"] > 0.99  # the same word scores as the captum loop
    assert "| sst2-attribution | config-built, synthetic data | ok |" in result.stdout


def test_gpu_check_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the script runs instead of refusing")
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "CUDA build" in result.stderr
