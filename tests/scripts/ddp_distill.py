"""Run by `torchrun --nproc_per_node 2` in tests/test_distributed.py: distil from a recipe, then save what each rank
ended with (whole tensors, gathered from shards under FSDP and ZeRO-3), so that the test can check that DDP or FSDP kept the
replicas identical, left the teacher unwrapped and gave every rank the same teacher cache.

With `KD_HF_GPU_PATHS_ON_CPU=1`, the recipe's FSDP or DeepSpeed (with `DS_ACCELERATOR=cpu`) runs on these CPU
processes. accelerate selects them only for GPU-like distributed types (`AcceleratorState.__init__`), so the gloo
processes are presented to it as `MULTI_GPU` before it chooses; the rest of its path (`fully_shard` and the
optimizer's switch to the shards, or the DeepSpeed engine; sharded checkpoints) then runs as it does on GPUs.
"""

import hashlib
import json
import os
import sys

import accelerate.state
import numpy as np
from accelerate.utils import DistributedType
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from kd_hf import run
from kd_hf.cli import parse_recipe
from kd_hf.data import TEACHER_CACHE_COLUMNS
from kd_hf.trainer.sharding import LOSSES_KEY, whole_weights


def lift_accelerates_gpu_gate() -> None:
    choose = accelerate.state.AcceleratorState.__init__

    def init(self, *args, **kwargs):
        shared = accelerate.state.PartialState(cpu=True)._shared_state
        if shared["distributed_type"] == DistributedType.MULTI_CPU:
            shared["distributed_type"] = DistributedType.MULTI_GPU
        choose(self, *args, **kwargs)

    accelerate.state.AcceleratorState.__init__ = init


def local_fraction(module) -> float:
    """The share of `module`'s parameters this process holds: a DTensor's shard (FSDP2), a ZeRO-3 partition."""
    local = total = 0
    for parameter in module.parameters():
        if isinstance(parameter, DTensor):
            local, total = local + parameter.to_local().numel(), total + parameter.numel()
        elif hasattr(parameter, "ds_numel"):
            local, total = local + parameter.ds_tensor.numel(), total + parameter.ds_numel
        else:
            local, total = local + parameter.numel(), total + parameter.numel()
    return local / total


def whole(module) -> dict:
    """`module`'s state dict, copied whole. Every process calls this: gathering shards (FSDP2, ZeRO-3) is collective."""
    with whole_weights(module):
        state = module.state_dict()
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in state.items()}


def cache_digest(dataset) -> str | None:
    """A digest of the teacher cache's columns, in the dataset's order (`None` without a cache)."""
    columns = [name for name in TEACHER_CACHE_COLUMNS if name in dataset.column_names]
    if not columns:
        return None
    digest = hashlib.sha256()
    for name in columns:
        for row in dataset[name]:
            digest.update(np.asarray(row, dtype=np.float32).tobytes())
    return digest.hexdigest()


if os.environ.get("KD_HF_GPU_PATHS_ON_CPU") == "1":
    lift_accelerates_gpu_gate()
config = parse_recipe(sys.argv[1:])
trainer = run.distill(config)
rank = trainer.args.process_index
# Under FSDP2 and DeepSpeed the losses' parameters are part of the student (`LOSSES_KEY`): keep them once, as
# `loss_modules.*`.
state = {k: v for k, v in whole(trainer.model).items() if not k.startswith(f"{LOSSES_KEY}.")}
state |= {f"loss_modules.{k}": v for k, v in whole(trainer.loss_modules).items()}
save_file(state, f"{config.output_dir}/rank{rank}.safetensors")
report = {
    "world_size": trainer.args.world_size,
    "distributed_type": trainer.accelerator.distributed_type.value,
    "student_wrapped_in_ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
    "teacher_wrapped_in_ddp": isinstance(trainer.teacher, DistributedDataParallel),
    "student_class": type(trainer.model_wrapped).__name__,
    "teacher_class": type(trainer.teacher).__name__,
    "student_parameter_class": type(next(trainer.model_wrapped.parameters())).__name__,
    "teacher_parameter_class": type(next(trainer.teacher.parameters())).__name__,
    "student_local_fraction": local_fraction(trainer.model_wrapped),
    "teacher_local_fraction": local_fraction(trainer.teacher),
    "global_step": trainer.state.global_step,
    "log_history": trainer.state.log_history,
    "train_cache_files": sorted(file["filename"] for file in trainer.train_dataset.cache_files),
    "train_cache_digest": cache_digest(trainer.train_dataset),
}
with open(f"{config.output_dir}/rank{rank}.json", "w") as file:
    json.dump(report, file)
# As `kd-hf distill` does: shut the process group down before the interpreter does (gloo's threads torn down at exit
# abort the process now and then).
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
