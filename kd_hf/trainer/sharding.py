"""What the losses can and cannot do under DeepSpeed ZeRO and FSDP: refused before training with the way out (DDP), or
sharded like the student.

Evidence, on this project's pinned stack (the README's "Scaling out" has the commands):

- The attribution loss back-propagates through a gradient (`autograd.grad(..., create_graph=True)`). DeepSpeed's
  ZeRO-2 and ZeRO-3 hook the first backward pass, which reduces the gradients (ZeRO-2: `IndexError` in
  `reduce_ipg_grads`) or frees the gathered parameters (ZeRO-3: `shape '[1, 32]' is invalid for input of size 0`)
  before the second; FSDP2's `fully_shard` crashed the process (SIGSEGV) in the second backward. DDP runs it, and
  equals one process on the same global batch (tests/test_distributed.py).
- Losses with parameters (hidden-state projections) are sharded under FSDP2 and DeepSpeed as part of the student
  (`shard_with_student`), and train with it: on 2 CPU processes, through the Trainer's FSDP2 and ZeRO-3 paths, as one
  process on the same global batch (tests/test_distributed.py). FSDP1 is not tested, and refuses them.
- accelerate's default FSDP2 wrapping (`_no_split_modules`) shards BERT's and ViT's embeddings module, then the
  input embeddings inside it a second time, which fails (`TypeError: Invariant encountered` in `fully_shard`):
  `wrap_layers_only` leaves the embeddings to the root.
- A frozen teacher shards for inference (`shard_for_inference`, `shard_teacher: true`): 2 CPU processes, its logits
  and the student it teaches as without sharding (tests/test_distributed.py).
- Under ZeRO-3 with `zero3_init_flag` the teacher loads partitioned: a student built from its weights needs them
  gathered (`whole_weights`), and a report on one process needs models loaded whole (`loading_whole`).
"""

import contextlib
import logging
import os

from accelerate.utils import DistributedType
from torch import nn
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy


logger = logging.getLogger(__name__)

SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)
# The student's submodule that holds the losses with parameters under FSDP2 (`shard_with_student`).
LOSSES_KEY = "kd_hf_losses"


def check_sharding(
    distributed_type: DistributedType, loss_needs: dict, trainable_losses: list[str], fsdp_version: int = 2
) -> None:
    """Raise `NotImplementedError` when `distributed_type` shards the student and a loss cannot run that way:
    `loss_needs` maps each loss to the outputs it needs (`attributions`: a double backward), `trainable_losses` names
    the losses with parameters, which DeepSpeed and FSDP2 (`fsdp_version`) shard with the student."""
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
    if trainable_losses and distributed_type is DistributedType.FSDP and fsdp_version != 2:
        raise NotImplementedError(
            f"Losses with trainable parameters ({trainable_losses}) are not supported under FSDP1; use FSDP2 "
            "(`fsdp_version: 2`, `recipes/accelerate/fsdp.yaml`), DeepSpeed, DDP (`recipes/accelerate/multi_gpu.yaml`), "
            "or `hidden_state` with equal hidden sizes."
        )


def layer_classes(model: nn.Module) -> list[str]:
    """The classes of `model._no_split_modules` that FSDP2 may shard on their own: those present that do not hold
    the input embeddings (`BertLayer`, not `BertEmbeddings`)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    holding = {type(module).__name__ for module in model.modules() if embeddings is not None
               and any(child is embeddings for child in module.modules())}  # fmt: skip
    present = {type(module).__name__ for module in model.modules()}
    return [name for name in getattr(model, "_no_split_modules", None) or [] if name in present - holding]


def wrap_layers_only(fsdp_plugin, model: nn.Module) -> None:
    """Under accelerate's default transformer-based wrapping (`model._no_split_modules`), name the classes to shard
    on their own (`layer_classes`): accelerate shards the input embeddings separately, and fails on a second sharding
    of those inside `BertEmbeddings`. A recipe's own `transformer_layer_cls_to_wrap` is kept."""
    if fsdp_plugin.auto_wrap_policy is not transformer_auto_wrap_policy or fsdp_plugin.transformer_cls_names_to_wrap:
        return
    layers = layer_classes(model)
    if layers:
        fsdp_plugin.transformer_cls_names_to_wrap = layers


def shard_for_inference(teacher: nn.Module, accelerator) -> nn.Module:
    """Shard a frozen teacher over the processes with FSDP2's `fully_shard` (`shard_teacher`): its layers one by one,
    then the rest, on the student's mesh. Each forward pass gathers a layer's weights as it runs and frees them after;
    the caller frees the rest (`reshard()`), which FSDP2 keeps gathered when no backward pass follows. Every process
    must run each forward pass. Returns `teacher`, sharded in place."""
    from torch.distributed.fsdp import fully_shard

    mesh = getattr(accelerator, "torch_device_mesh", None)
    mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None
    teacher.to(accelerator.device)
    layers = set(layer_classes(teacher))
    for module in list(teacher.modules()):
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh)
    return fully_shard(teacher, mesh=mesh)


def shard_with_student(student: nn.Module, losses: nn.ModuleDict) -> None:
    """Under FSDP2 or DeepSpeed, make `losses` (those with parameters) a submodule of the student, `LOSSES_KEY`, before
    accelerate shards it: their parameters are then sharded, gathered, reduced, optimized and checkpointed with the
    student's (ZeRO-3 gathers a submodule's weights for its forward pass wherever it is called from). They are not
    part of the saved student (`_keys_to_ignore_on_save`), which loads in plain transformers."""
    student.add_module(LOSSES_KEY, losses)
    ignored = set(getattr(student, "_keys_to_ignore_on_save", None) or ())
    student._keys_to_ignore_on_save = ignored | {f"{LOSSES_KEY}.{key}" for key in losses.state_dict()}


def whole_weights(model: nn.Module):
    """A context in which `model`'s weights are whole on every process: gathered (read-only) when DeepSpeed ZeRO-3
    partitioned them at load time (`zero3_init_flag`), as a student built from the teacher's weights needs. Every
    process must enter it."""
    partitioned = [parameter for parameter in model.parameters() if hasattr(parameter, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


@contextlib.contextmanager
def loading_whole(args):
    """A context in which models load whole on this process alone: without DeepSpeed ZeRO-3's partitioned loading
    (`zero3_init_flag`), which transformers applies while the run's config (`args.hf_deepspeed_config`) is active
    and which needs every process."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            set_hf_deepspeed_config(config)


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
