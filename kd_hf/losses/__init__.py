"""Registry of distillation losses.

A loss is a callable `loss(student_outputs, teacher_outputs, inputs, args) -> torch.Tensor` returning one value per
example (shape `[batch]`), so that the trainer can normalise over the whole accumulated batch. It is either a
function, or an `nn.Module` class built once per run as `cls(args, student_config, teacher_config)`: the class form
can check the pair at set-up and hold trainable parameters (e.g. projections), which train with the student and are
saved in checkpoints but not in the student. A loss declares what it reads from the forward pass (`requires`) and its
recipe fields (`options`, a `LossOptions` dataclass: see `kd_hf.losses.options`). Register it with:

```python
from kd_hf.losses import register_loss


@register_loss("my_loss")
def my_loss(student_outputs, teacher_outputs, inputs, args):
    return (student_outputs.logits - teacher_outputs.logits).pow(2).sum(-1)
```

and name it in a recipe: `loss_type: [soft_label, my_loss]`.
"""

import re
from collections.abc import Callable

import torch
from torch import nn

from .options import LossOptions


__all__ = [
    "LOSS_OPTIONS", "LOSS_REGISTRY", "LOSS_REQUIREMENTS", "OUTPUT_RECORDERS", "LossOptions", "build_losses",
    "loss_requirements", "option_classes", "register_loss",
]  # fmt: skip


LossFunction = Callable[..., torch.Tensor] | type[nn.Module]
LOSS_REGISTRY: dict[str, LossFunction] = {}

# What each loss needs from the models' forward pass, so that the trainer asks only for what is used.
LOSS_REQUIREMENTS: dict[str, frozenset[str]] = {}

# The recipe fields of each loss that has any.
LOSS_OPTIONS: dict[str, type[LossOptions]] = {}

# Outputs that no model returns by itself, and the recorder that collects them from forward hooks: called with a
# model, it returns an object whose `pop()` gives what the last forward pass produced (see `attention.QKVRecorder`).
OUTPUT_RECORDERS: dict[str, Callable[[nn.Module], object]] = {}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_OUTPUTS = frozenset({"attentions", "hidden_states", "attributions"})


def register_loss(
    name: str, requires: tuple[str, ...] = (), options: type[LossOptions] | None = None
) -> Callable[[LossFunction], LossFunction]:
    """Add a loss to `LOSS_REGISTRY` under `name` (lowercase snake_case, not yet taken).

    Args:
        name (`str`): the name recipes use in `loss_type`.
        requires (`tuple[str, ...]`, *optional*): outputs the loss reads: `attentions`, `hidden_states`,
            `attributions`, or one collected by an `OUTPUT_RECORDERS` entry (`qkv`).
        options (`type[LossOptions]`, *optional*): its recipe fields (`kd_hf.losses.options`).
    """
    if not _NAME.match(name):
        raise ValueError(f"Loss name {name!r} must be lowercase snake_case, e.g. 'soft_label'.")
    if name in LOSS_REGISTRY:
        raise ValueError(f"A loss named {name!r} is already registered; pick another name.")
    known = _MODEL_OUTPUTS | set(OUTPUT_RECORDERS)
    unknown = set(requires) - known
    if unknown:
        raise ValueError(f"Loss {name!r} requires unknown outputs {sorted(unknown)}; known: {sorted(known)}.")
    if options is not None and not (isinstance(options, type) and issubclass(options, LossOptions)):
        raise ValueError(f"The options of loss {name!r} must be a `LossOptions` dataclass, got {options!r}.")

    def decorator(function: LossFunction) -> LossFunction:
        LOSS_REGISTRY[name] = function
        LOSS_REQUIREMENTS[name] = frozenset(requires)
        if options is not None:
            LOSS_OPTIONS[name] = options
        return function

    return decorator


def option_classes() -> tuple[type[LossOptions], ...]:
    """Every registered loss's options class, once each, in registration order."""
    return tuple(dict.fromkeys(LOSS_OPTIONS.values()))


def build_losses(args, student_config, teacher_config) -> dict[str, Callable[..., torch.Tensor]]:
    """The losses of `args.loss_type`, ready to call: functions as they are, module classes instantiated (which checks
    that the teacher/student pair supports them)."""
    losses = {}
    for name in args.loss_type:
        loss = LOSS_REGISTRY[name]
        losses[name] = loss(args, student_config, teacher_config) if isinstance(loss, type) else loss
    return losses


def loss_requirements(name: str, loss) -> frozenset[str]:
    """What a built loss needs from the forward pass (an instance may narrow its class's declaration)."""
    return frozenset(getattr(loss, "requires", LOSS_REQUIREMENTS[name]))


from . import attention, attribution, hidden_state, soft_label  # noqa: E402,F401  (fills the registry)
