"""Groups of recipe fields: `RecipeOptions`, a dataclass whose fields carry defaults and `help`, with the checks that
go with them.

`DistillationConfig` is made of such groups (the teacher, the student, the data, the report and Hub, and each loss's
options, `kd_hf.losses.LossOptions`), so that a recipe stays one flat YAML file while each idea keeps its fields and
its checks together. `choices` sit in the field metadata, which `HfArgumentParser` hands on to argparse; what argparse
would reject sits in class attributes: `RANGES` for numbers, `MAPPINGS` for fields given as YAML mappings or JSON
strings, `CARD` for the words the card uses, and `validate` for checks across fields.
"""

import dataclasses
import json
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


def as_dict(value: dict | str | None, name: str) -> dict | None:
    """Recipes give mapping fields as YAML mappings; the command line gives them as JSON strings."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{name}` must be a mapping or a JSON object string, got {value!r}: {error}") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise ValueError(f"`{name}` must be a mapping or a JSON object string, got {value!r}")
    return parsed  # `null` on the command line unsets a field the recipe sets


@dataclass
class RecipeOptions:
    """Base of a group of recipe fields: subclass it as a dataclass whose fields all have defaults and `help`."""

    # Field -> (range, hint): `>= a`, `> a` or an interval like `[0, 1]`, and what to say when a value is outside it.
    RANGES: ClassVar[dict[str, tuple[str, str | None]]] = {}
    # Fields that hold a mapping, read from a JSON string when the command line gives one.
    MAPPINGS: ClassVar[tuple[str, ...]] = ()
    # Field -> the words the card's recipe table uses for it; fields left out are not shown on the card.
    CARD: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Checks across fields, or conversions (e.g. `layer_map: 3,6` into a list), beyond choices and ranges. It
        runs on the whole config, after every group's choices and ranges have been checked."""

    @classmethod
    def check(cls, config) -> None:
        """Read this group's mappings and check its choices and ranges as they stand on `config` (a config made of
        groups, which inherits this one's fields)."""
        for name in cls.MAPPINGS:
            setattr(config, name, as_dict(getattr(config, name), name))
        for option in dataclasses.fields(cls):
            value, choices = getattr(config, option.name), option.metadata.get("choices")
            if value is None and option.default is None:
                choices = None  # an optional field left unset
            spec, hint = cls.RANGES.get(option.name, (None, None))
            check_value(option.name, value, choices, spec, hint)
