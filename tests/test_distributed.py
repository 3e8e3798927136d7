import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


RECIPES = {
    "soft_label": {},
    # A narrower student: the hidden-state projections train too, DDP-wrapped like the student.
    "intermediate": {
        "model_init": "config",
        "model_config": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
        "loss_type": ["soft_label", "attention", "hidden_state"],
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("losses", RECIPES)
def test_two_process_ddp_run_keeps_identical_students(tiny_text_project, tmp_path, losses):
    """A real 2-process gloo DDP run on CPU: both ranks end with the same student and an unwrapped teacher."""
    recipe = tiny_text_project(max_steps=3, save_strategy="no", **RECIPES[losses])
    script = Path(__file__).parent / "scripts" / "ddp_distill.py"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    result = subprocess.run(
        [*torchrun, str(script), str(recipe)], capture_output=True, text=True, env=env, timeout=300
    )

    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "student"
    reports = [json.loads((output / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["world_size"] == 2 and report["distributed_type"] == "MULTI_CPU"
        assert report["student_wrapped_in_ddp"] and not report["teacher_wrapped_in_ddp"]
        assert report["global_step"] == 3
    rank0, rank1 = (load_file(output / f"rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    # Training happened: the student moved away from the teacher it was copied from or shaped like.
    teacher = load_file(tmp_path / "teacher" / "model.safetensors")
    assert not torch.equal(rank0["classifier.bias"], teacher["classifier.bias"])


@pytest.mark.slow
def test_accelerate_launch_runs_the_cli_module(tiny_text_project, tmp_path):
    recipe = tiny_text_project(max_steps=2, save_strategy="no")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    result = subprocess.run(
        [*launch, "-m", "kd_hf.cli", "distill", str(recipe)], capture_output=True, text=True, env=env, timeout=300
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval_teacher_agreement" in json.loads((tmp_path / "student" / "all_results.json").read_text())
    report = json.loads((tmp_path / "student" / "eval_results.json").read_text())
    assert 0 <= report["student"]["top1_agreement"] <= 1 and report["teacher"]["accuracy"] >= 0
