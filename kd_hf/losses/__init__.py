"""Registry of distillation losses.

A loss is a callable `loss(student_outputs, teacher_outputs, inputs, args) -> torch.Tensor` returning one value per
example (shape `[batch]`), so that the trainer can normalise over the whole accumulated batch. It is either a
function, or an `nn.Module` class built once per run as `cls(args, student_config, teacher_config)`: the class form
can check the pair at set-up and hold trainable parameters (e.g. projections), which train with the student and are
saved in checkpoints but not in the student. Register it with:

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


LossFunction = Callable[..., torch.Tensor] | type[nn.Module]
LOSS_REGISTRY: dict[str, LossFunction] = {}

# What each loss needs from the models' forward pass, so that the trainer asks only for what is used.
LOSS_REQUIREMENTS: dict[str, frozenset[str]] = {}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_KNOWN_REQUIREMENTS = frozenset({"attentions", "hidden_states", "attributions"})


def register_loss(name: str, requires: tuple[str, ...] = ()) -> Callable[[LossFunction], LossFunction]:
    """Add a loss to `LOSS_REGISTRY` under `name` (lowercase snake_case, not yet taken).

    Args:
        name (`str`): the name recipes use in `loss_type`.
        requires (`tuple[str, ...]`, *optional*): model outputs the loss reads (`attentions`, `hidden_states`).
    """
    if not _NAME.match(name):
        raise ValueError(f"Loss name {name!r} must be lowercase snake_case, e.g. 'soft_label'.")
    if name in LOSS_REGISTRY:
        raise ValueError(f"A loss named {name!r} is already registered; pick another name.")
    unknown = set(requires) - _KNOWN_REQUIREMENTS
    if unknown:
        raise ValueError(
            f"Loss {name!r} requires unknown outputs {sorted(unknown)}; known: {sorted(_KNOWN_REQUIREMENTS)}."
        )

    def decorator(function: LossFunction) -> LossFunction:
        LOSS_REGISTRY[name] = function
        LOSS_REQUIREMENTS[name] = frozenset(requires)
        return function

    return decorator


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
