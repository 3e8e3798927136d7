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
(`temperature: 4`, not `soft_label: {temperature: 4}`) and the command line takes `--temperature 4`. Its checks run
for every option class: `choices` (in the field metadata, which `HfArgumentParser` hands to argparse), the
`RANGES` here (they cannot live in the metadata, which argparse would reject) and `validate`. The card's recipe
table shows the `CARD` fields of the losses in use.
"""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar


def in_range(value: float, spec: str) -> bool:
    """Whether `value` lies in `spec`: `>= a`, `> a`, or an interval `[a, b]`, `(a, b)`, `[a, b)`, `(a, b]`."""
    if spec.startswith(">="):
        return value >= float(spec[2:])
    if spec.startswith(">"):
        return value > float(spec[1:])
    low, high = (float(bound) for bound in spec[1:-1].split(","))
    return (low <= value if spec[0] == "[" else low < value) and (value <= high if spec[-1] == "]" else value < high)


def check_value(name: str, value, choices=None, spec: str | None = None, hint: str | None = None) -> None:
    """Refuse a value outside its `choices`, or a number outside its range `spec` (`None` is always allowed)."""
    if choices and value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    if spec and value is not None and not in_range(value, spec):
        raise ValueError(
            f"`{name}` must be {'in ' if spec[0] in '[(' else ''}{spec}, got {value}" + (f"; {hint}." if hint else ".")
        )


@dataclass
class LossOptions:
    """Base of a loss's options: subclass it as a dataclass whose fields all have defaults and `help`."""

    # Field -> (range, hint): `>= a`, `> a` or an interval like `[0, 1]`, and what to say when a value is outside it.
    RANGES: ClassVar[dict[str, tuple[str, str | None]]] = {}
    # Field -> the words the card's recipe table uses for it; fields left out are not shown on the card.
    CARD: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Checks across fields, or conversions (e.g. `layer_map: 3,6` into a list), beyond choices and ranges."""

    @classmethod
    def check(cls, config) -> None:
        """Check this class's fields as they stand on `config` (a `DistillationConfig`, which inherits them)."""
        for option in dataclasses.fields(cls):
            spec, hint = cls.RANGES.get(option.name, (None, None))
            check_value(option.name, getattr(config, option.name), option.metadata.get("choices"), spec, hint)
        cls.validate(config)
