"""Weight averaging: a run that ends with the mean of its last weights instead of the last ones alone.

With `weight_averaging_steps: N`, the weights after every `weight_averaging_interval`-th of the last N optimizer steps
(the last step included) are averaged uniformly, as stochastic weight averaging does (Izmailov et al., 2018; the
update is `torch.optim.swa_utils`'). When training ends, the model takes the average: the saved student, its
evaluation, report and card are the average's. Each checkpoint inside the window keeps the running average
(`WEIGHT_AVERAGE_NAME`), so that a resumed run ends with the average of an uninterrupted one.

Only the parameters that train are averaged (an adapter's, not its frozen base), in their own dtype, on their own
device: one more copy of them in memory.
"""

import json
import logging
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.optim.swa_utils import get_swa_multi_avg_fn
from transformers import TrainerCallback


logger = logging.getLogger(__name__)

WEIGHT_AVERAGE_NAME = "kd_hf_weight_average.safetensors"


def averaged_steps(max_steps: int, window: int, interval: int, until: int | None = None) -> list[int]:
    """The optimizer steps whose weights the average of a `max_steps` run holds, up to step `until` (default: all)."""
    last = max_steps if until is None else min(until, max_steps)
    return [step for step in range(max_steps, max(max_steps - window, 0), -interval) if step <= last][::-1]


class WeightAveraging(TrainerCallback):
    """The running mean of a model's trainable weights over the last `window` optimizer steps, one sample every
    `interval` steps counted back from the last; `ResumableTrainer` saves, restores and applies it."""

    def __init__(self, window: int, interval: int = 1):
        self.window, self.interval = window, interval
        self.names: list[str] = []
        self.average: list[torch.Tensor] = []
        self.steps: list[int] = []  # the steps averaged so far
        self.restored = False  # set by `load`: what it restored is checked against this run's schedule once
        self._update = get_swa_multi_avg_fn()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step, last = state.global_step, state.max_steps
        if step <= last - self.window or (last - step) % self.interval:
            return
        self._check_restored(last, step - 1)
        named = [(name, p.detach()) for name, p in model.named_parameters() if p.requires_grad]
        if not self.steps:
            self.names, self.average = [name for name, _ in named], [p.clone() for _, p in named]
        else:
            self._update(self.average, [p for _, p in named], len(self.steps))
        self.steps.append(step)

    def _check_restored(self, max_steps: int, until: int) -> None:
        """Once after `load`: drop what a resumed run restored when this run's schedule would not have averaged those
        steps (a run resumed with more steps, whose window moved; a checkpoint saved without the average): the average
        then restarts, and says so."""
        if not self.restored:
            return
        self.restored = False
        expected = averaged_steps(max_steps, self.window, self.interval, until)
        if self.steps != expected:
            logger.warning(
                "The weight average restored from the checkpoint holds steps %s, but this run of %d steps averages "
                "%s up to step %d: it restarts, so the final average holds only the steps from here on.",
                self.steps or "none", max_steps, expected, until,
            )  # fmt: skip
            self.names, self.average, self.steps = [], [], []

    def apply(self, model, max_steps: int, global_step: int) -> None:
        """Give `model` the average, in place (the optimizer keeps its tensors); log what it holds."""
        self._check_restored(max_steps, global_step)
        if not self.steps:
            logger.warning(
                "No weights were averaged: training stopped at step %d, before the last %d of its %d steps began. "
                "The model keeps its last weights.", global_step, self.window, max_steps,
            )  # fmt: skip
            return
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in zip(self.names, self.average):
                parameters[name].copy_(value)
        logger.info("The model now holds the average of its weights after steps %s.", _span(self.steps))

    def save(self, folder: str) -> None:
        if self.steps:
            tensors = {name: value.detach().cpu().contiguous() for name, value in zip(self.names, self.average)}
            save_file(tensors, os.path.join(folder, WEIGHT_AVERAGE_NAME), metadata={"steps": json.dumps(self.steps)})

    def load(self, folder: str, model) -> None:
        """Restore the average saved in `folder`, or start none if the checkpoint precedes the window."""
        path = os.path.join(folder, WEIGHT_AVERAGE_NAME)
        self.names, self.average, self.steps, self.restored = [], [], [], True
        if not os.path.isfile(path):
            return
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        with safe_open(path, framework="pt") as file:
            saved, steps = set(file.keys()), json.loads(file.metadata()["steps"])
            if saved != trainable.keys():
                raise ValueError(
                    f"{path} averages other weights than this model trains (missing "
                    f"{sorted(trainable.keys() - saved)[:4]}, unexpected {sorted(saved - trainable.keys())[:4]}): resume "
                    "from a checkpoint of the same model and recipe, or start over (`overwrite_output_dir: true`)."
                )
            self.names = list(trainable)  # the model's order, which `on_step_end` pairs the average with
            self.average = [file.get_tensor(name).to(trainable[name].device) for name in self.names]
            self.steps = steps


def _span(steps: list[int]) -> str:
    return f"{steps[0]}..{steps[-1]} ({len(steps)} samples)" if len(steps) > 3 else ", ".join(map(str, steps))
