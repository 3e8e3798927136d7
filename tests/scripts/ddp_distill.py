"""Run by `torchrun --nproc_per_node 2` in tests/test_distributed.py: distil from a recipe, then save what each rank
ended with, so that the test can check that DDP kept the replicas identical, left the teacher unwrapped and gave
every rank the same teacher cache."""

import hashlib
import json
import sys

import numpy as np
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from kd_hf import run
from kd_hf.cli import parse_recipe
from kd_hf.data import TEACHER_CACHE_COLUMNS


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


config = parse_recipe(sys.argv[1:])
trainer = run.distill(config)
rank = trainer.args.process_index
state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
state |= {f"loss_modules.{k}": v.contiguous() for k, v in trainer.loss_modules.state_dict().items()}
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
    "global_step": trainer.state.global_step,
    "log_history": trainer.state.log_history,
    "train_cache_files": sorted(file["filename"] for file in trainer.train_dataset.cache_files),
    "train_cache_digest": cache_digest(trainer.train_dataset),
}
with open(f"{config.output_dir}/rank{rank}.json", "w") as file:
    json.dump(report, file)
