"""Reading a recipe: `RECIPE.yaml [--field value ...]` into a `DistillationConfig`.

The YAML gives the defaults and the flags override them, so a recipe value is typed and checked as its flag would be;
an error names the key and the file to fix, not the flag argparse would.

```python
from kd_hf.recipe import parse_recipe

config = parse_recipe(["recipes/offline_text.yaml", "--max_steps", "50"])
```
"""

import argparse
import dataclasses
import difflib
import os
import typing

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .config import DistillationConfig


# What a recipe value of a flag's type must be, as the errors say it.
_TYPE_NAMES = {int: "an integer", float: "a number", string_to_bool: "true or false"}
_LIST_TYPE_NAMES = {int: "a list of integers", float: "a list of numbers", string_to_bool: "a list of true/false"}


def _read_recipe(path: str) -> dict:
    if os.path.isdir(path):
        raise SystemExit(
            f"Recipe {path!r} is a folder, not a recipe; give a YAML file such as recipes/offline_text.yaml."
        )
    try:
        with open(path) as file:
            recipe = yaml.safe_load(file) or {}
    except FileNotFoundError:
        raise SystemExit(f"Recipe {path!r} not found; the shipped recipes are in recipes/.") from None
    except yaml.YAMLError as error:
        raise SystemExit(f"Recipe {path!r} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(recipe, dict):
        raise SystemExit(f"Recipe {path!r} must be a flat YAML mapping of DistillationConfig fields.")
    return recipe


def _convert(action: argparse.Action, value):
    if action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(value)
        return action.type(str(value))  # int("2.5") fails where int(2.5) would quietly give 2
    if action.type is string_to_bool:
        return string_to_bool(value if isinstance(value, bool) else str(value))
    return value  # strings, maps and the choice fields, which the config checks itself


def _recipe_value(path: str, key: str, value, action: argparse.Action, nullable: bool):
    """A recipe value as its command-line flag would give it: typed, and a scalar as a list of one for list fields.

    argparse would type-check a string default itself, but name the flag (`--temperature`) instead of the key and
    file; a non-string default it would pass on unchecked, and a scalar list field it would read letter by letter.
    """
    help_text = " ".join((action.help or "").split())
    if value is None:
        if nullable:
            return None
        default = f"; delete the line to keep the default, {action.default}" if action.default is not None else ""
        raise SystemExit(f"Recipe {path!r}: `{key}` cannot be null ({help_text}){default}.")
    is_list = action.nargs in ("+", "*")
    try:
        if is_list:
            return [_convert(action, item) for item in (value if isinstance(value, list) else [value])]
        return _convert(action, value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        expected = (_LIST_TYPE_NAMES if is_list else _TYPE_NAMES)[action.type]
        shown = value if isinstance(value, str) else repr(value)
        raise SystemExit(f"Recipe {path!r}: `{key}: {shown}` is not {expected}; {key}: {help_text}") from None


def _check_flags(parser: HfArgumentParser, overrides: list[str], fields: set[str]) -> None:
    _, unknown = parser.parse_known_args(overrides)
    if not unknown:
        return
    flag = next((arg for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        raise SystemExit(f"Unexpected argument {unknown[0]!r} after the recipe; set fields with `--field value`.")
    flag = flag.split("=", 1)[0]
    close = difflib.get_close_matches(flag, [f"--{name}" for name in fields], n=1)
    hint = f"; did you mean `{close[0]}`?" if close else "; see `kd-hf distill --help` for the fields."
    raise SystemExit(f"unknown flag `{flag}`{hint}")


def parse_recipe(argv: list[str]) -> DistillationConfig:
    """Read `RECIPE.yaml [--field value ...]`: the YAML gives the defaults, the flags override them.

    A recipe or flag that cannot be read raises `SystemExit` with one line naming the key (and file) to fix; values
    that read but fall outside their range raise the config's `ValueError`.
    """
    if not argv or argv[0].startswith("-"):
        raise SystemExit("Give a recipe first: `kd-hf distill recipes/offline_text.yaml [--field value ...]`.")
    path, overrides = argv[0], argv[1:]
    recipe = _read_recipe(path)
    fields = {field.name for field in dataclasses.fields(DistillationConfig) if field.init}
    for key in recipe:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else "; see `kd-hf distill --help` for the fields."
            raise SystemExit(f"Recipe {path!r}: unknown field `{key}`{hint}")
    parser = HfArgumentParser(DistillationConfig)
    # A bool field also has a `--no_<field>` action with the same dest: take the field's own flag.
    actions = {action.dest: action for action in parser._actions if f"--{action.dest}" in action.option_strings}
    hints = typing.get_type_hints(DistillationConfig)
    for key, value in recipe.items():
        nullable = type(None) in typing.get_args(hints[key])
        recipe[key] = _recipe_value(path, key, value, actions[key], nullable)
    parser.set_defaults(**recipe)
    _check_flags(parser, overrides, fields)
    (config,) = parser.parse_args_into_dataclasses(args=overrides)
    return config
