"""What the losses cannot do under DeepSpeed ZeRO and FSDP, refused before training with the way out (DDP).

Evidence, on this project's pinned stack (the README's "Scaling out" has the commands):

- The attribution loss back-propagates through a gradient (`autograd.grad(..., create_graph=True)`). DeepSpeed's
  ZeRO-2 and ZeRO-3 hook the first backward pass, which reduces the gradients (ZeRO-2: `IndexError` in
  `reduce_ipg_grads`) or frees the gathered parameters (ZeRO-3: `shape '[1, 32]' is invalid for input of size 0`)
  before the second; FSDP2's `fully_shard` crashed the process (SIGSEGV) in the second backward. DDP runs it, and
  equals one process on the same global batch (tests/test_distributed.py).
- Losses with parameters (hidden-state projections) would need sharding and checkpointing of their own beside the
  student's; DDP wraps them like the student. FSDP2 trains them sharded with the student when both are one module
  whose forward returns the loss (tests/scripts/fsdp_teacher.py, 2 CPU processes), but accelerate prepares the
  student alone and runs FSDP only on GPUs, where this project cannot test it.
"""

import logging
import os

from accelerate.utils import DistributedType


logger = logging.getLogger(__name__)

SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)


def check_sharding(distributed_type: DistributedType, loss_needs: dict, trainable_losses: list[str]) -> None:
    """Raise `NotImplementedError` when `distributed_type` shards the student and a loss cannot run that way:
    `loss_needs` maps each loss to the outputs it needs (`attributions`: a double backward), `trainable_losses` names
    the losses with parameters."""
    if distributed_type not in SHARDED:
        return
    attributing = [name for name, needs in loss_needs.items() if "attributions" in needs]
    if attributing:
        raise NotImplementedError(
            f"The {attributing} loss differentiates the student twice (the gradient of its input gradients), which "
            f"{distributed_type.value} cannot: it reduces or frees the student's gradients and parameters in the "
            "first backward pass. Use DDP (`recipes/accelerate/multi_gpu.yaml`), and `attribution_batch_size` to bound "
            "the memory of the double backward."
        )
    if trainable_losses:
        raise NotImplementedError(
            f"Losses with trainable parameters ({trainable_losses}) are not supported under {distributed_type.value}; "
            "use DDP (`recipes/accelerate/multi_gpu.yaml`), or `hidden_state` with equal hidden sizes."
        )


def warn_if_fsdp_fell_back(fsdp_requested: bool, distributed_type: DistributedType) -> None:
    """accelerate selects FSDP only on GPU-like devices: asked for on CPU (`fsdp` in the recipe, or an accelerate
    config with `distributed_type: FSDP`), it quietly trains with DDP. Say so, once, before training."""
    requested = fsdp_requested or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if requested and distributed_type is not DistributedType.FSDP:
        logger.warning(
            "FSDP was asked for, but accelerate runs it only on GPUs: this run is %s, every process holding the whole "
            'student (README, "Scaling out").',
            distributed_type.value,
        )
