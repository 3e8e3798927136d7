"""`TrainableLossesTrainer`: the `DistillationTrainer` mixin for losses with parameters (hidden-state projections).

Their parameters train with the student (one optimizer; gradients DDP-averaged, or reduced across the processes
holding their shards under FSDP2 and DeepSpeed) and are saved in each checkpoint as `LOSS_STATE_NAME`, beside the
student's weights, so that a resumed run picks them up where it stopped.
"""

import os

from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.tensor import DTensor

from ..checkpoints import ResumableTrainer, check_keys
from .sharding import LOSSES_KEY, shard_with_student, whole_weights


# Trainable parts of the losses (e.g. hidden-state projections) in a checkpoint folder, beside the student's weights.
LOSS_STATE_NAME = "kd_hf_loss_state.safetensors"


class TrainableLossesTrainer(ResumableTrainer):
    """A `ResumableTrainer` that trains the parameters of `losses` (which `DistillationTrainer.__init__` builds) with
    the student and keeps them in its checkpoints."""

    def _prepare_trainable_losses(self) -> None:
        """Put losses with parameters on the device, DDP-wrapped like the student so their gradients are averaged, or
        under FSDP2 and DeepSpeed made part of the student, which accelerate shards."""
        self.loss_modules = nn.ModuleDict(
            {name: loss for name, loss in self.losses.items() if isinstance(loss, nn.Module)}
        )
        if not any(True for _ in self.loss_modules.parameters()):
            return
        # FSDP1 was refused before this (`kd_hf.trainer.sharding`).
        self.loss_modules.to(self.args.device)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            shard_with_student(self.model, self.loss_modules)
            return
        for name, loss in self.loss_modules.items():
            if any(True for _ in loss.parameters()):
                self.losses[name] = self.accelerator.prepare_model(loss)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        parameters = [p for p in self.loss_modules.parameters() if p.requires_grad]
        # Under FSDP2 and DeepSpeed they are the student's own (`shard_with_student`), already in the optimizer.
        if parameters and not any(p is parameters[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": parameters, "weight_decay": 0.0})
            # Trainer zeroes the student's gradients after each step (`model.zero_grad()`), not these.
            optimizer.register_step_post_hook(lambda *_: self.loss_modules.zero_grad(set_to_none=True))
        return optimizer

    def get_decay_parameter_names(self, model) -> list[str]:
        # Losses sharded with the student train without weight decay, as they do beside it.
        return [name for name in super().get_decay_parameter_names(model) if not name.startswith(f"{LOSSES_KEY}.")]

    def _save_extra_state(self, folder: str) -> None:
        # Every process gathers the sharded parameters (FSDP2, ZeRO-3: collectives); the main one writes them whole.
        with whole_weights(self.loss_modules):
            state = self.loss_modules.state_dict()
            state = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}
            if state and self.args.should_save:
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                          os.path.join(folder, LOSS_STATE_NAME))  # fmt: skip

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_STATE_NAME)
        saved = load_file(path) if os.path.isfile(path) else {}
        ours = self.loss_modules.state_dict()
        check_keys(resume_from_checkpoint, self.loss_modules, ours.keys() - saved.keys(), saved.keys() - ours.keys(),
                   what=f"loss parameters ({LOSS_STATE_NAME})")  # fmt: skip
        if saved and not self.is_fsdp_enabled:  # under FSDP2 they came back with the student's sharded state
            self.loss_modules.load_state_dict(saved)
