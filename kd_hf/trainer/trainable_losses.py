"""`TrainableLossesTrainer`: the `DistillationTrainer` mixin for losses with parameters (hidden-state projections).

Their parameters train with the student (one optimizer, DDP-averaged gradients) and are saved in each checkpoint as
`LOSS_STATE_NAME`, beside the student's weights, so that a resumed run picks them up where it stopped.
"""

import os

from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoints import ResumableTrainer, check_keys


# Trainable parts of the losses (e.g. hidden-state projections) in a checkpoint folder, beside the student's weights.
LOSS_STATE_NAME = "kd_hf_loss_state.safetensors"


class TrainableLossesTrainer(ResumableTrainer):
    """A `ResumableTrainer` that trains the parameters of `losses` (which `DistillationTrainer.__init__` builds) with
    the student and keeps them in its checkpoints."""

    def _prepare_trainable_losses(self) -> None:
        """Put losses with parameters on the device, DDP-wrapped like the student so their gradients are averaged."""
        self.loss_modules = nn.ModuleDict(
            {name: loss for name, loss in self.losses.items() if isinstance(loss, nn.Module)}
        )
        if not any(True for _ in self.loss_modules.parameters()):
            return
        # DeepSpeed and FSDP were refused before this (`kd_hf.trainer.sharding`).
        self.loss_modules.to(self.args.device)
        for name, loss in self.loss_modules.items():
            if any(True for _ in loss.parameters()):
                self.losses[name] = self.accelerator.prepare_model(loss)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        parameters = [p for p in self.loss_modules.parameters() if p.requires_grad]
        if parameters and not any(p is parameters[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": parameters, "weight_decay": 0.0})
            # Trainer zeroes the student's gradients after each step (`model.zero_grad()`), not these.
            optimizer.register_step_post_hook(lambda *_: self.loss_modules.zero_grad(set_to_none=True))
        return optimizer

    def _save_extra_state(self, folder: str) -> None:
        state = self.loss_modules.state_dict()
        if state:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in state.items()}, os.path.join(folder, LOSS_STATE_NAME)
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_STATE_NAME)
        saved = load_file(path, device=str(self.args.device)) if os.path.isfile(path) else {}
        ours = self.loss_modules.state_dict()
        check_keys(resume_from_checkpoint, self.loss_modules, ours.keys() - saved.keys(), saved.keys() - ours.keys(),
                   what=f"loss parameters ({LOSS_STATE_NAME})")  # fmt: skip
        if saved:
            self.loss_modules.load_state_dict(saved)
