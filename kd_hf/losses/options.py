"""The options a loss declares: a small dataclass of recipe fields with their defaults, help, checks and card labels.

```python
from dataclasses import dataclass, field

from kd_hf.losses import LossOptions, register_loss


@dataclass
class MarginOptions(LossOptions):
    margin: float = field(default=1.0, metadata={"help": "Logit margin of the `margin` loss (> 0)."})

    RANGES = {"margin": ("> 0", None)}
    CARD = {"margin": "logit margin"}


@register_loss("margin", options=MarginOptions)
def margin_loss(student_outputs, teacher_outputs, inputs, args): ...
```

`DistillationConfig` inherits the options of every loss registered when it is defined, so a recipe stays flat
(`temperature: 4`, not `soft_label: {temperature: 4}`) and the command line takes `--temperature 4`. They are
checked as every group of recipe fields is (`kd_hf.options.RecipeOptions`): `choices` in the field metadata,
`RANGES`, and `validate`. The card's recipe table shows the `CARD` fields of the losses in use.
"""

from dataclasses import dataclass

from ..options import RecipeOptions


@dataclass
class LossOptions(RecipeOptions):
    """Base of a loss's options: subclass it as a dataclass whose fields all have defaults and `help`, and pass the
    class to `register_loss(..., options=...)`."""
