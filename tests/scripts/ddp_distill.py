"""Run by `torchrun --nproc_per_node 2` in tests/test_distributed.py: distil from a recipe, then save what each rank
ended with, so that the test can check that DDP kept the replicas identical and left the teacher unwrapped."""

import json
import sys

from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from kd_hf import run
from kd_hf.cli import parse_recipe


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
    "global_step": trainer.state.global_step,
}
with open(f"{config.output_dir}/rank{rank}.json", "w") as file:
    json.dump(report, file)
