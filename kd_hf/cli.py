"""The `kd-hf` command line.

```bash
kd-hf train recipes/offline_text_teacher.yaml          # fine-tune a teacher, no distillation
kd-hf distill recipes/offline_text.yaml --max_steps 50  # any recipe field can be overridden
accelerate launch -m kd_hf.cli distill recipes/offline_text.yaml
torchrun --nproc_per_node 2 -m kd_hf.cli distill recipes/offline_text.yaml
```
"""

import dataclasses
import difflib
import logging
import sys

import yaml
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from .config import DistillationConfig


COMMANDS = {
    "train": "fine-tune the model of a recipe on its dataset, without a teacher",
    "distill": "distil the recipe's teacher into its student",
}


def parse_recipe(argv: list[str]) -> DistillationConfig:
    """Read `RECIPE.yaml [--field value ...]`: the YAML gives the defaults, the flags override them."""
    if not argv or argv[0].startswith("-"):
        raise SystemExit("Give a recipe first: `kd-hf distill recipes/offline_text.yaml [--field value ...]`.")
    path, overrides = argv[0], argv[1:]
    try:
        with open(path) as file:
            recipe = yaml.safe_load(file) or {}
    except FileNotFoundError:
        raise SystemExit(f"Recipe {path!r} not found; the shipped recipes are in recipes/.") from None
    if not isinstance(recipe, dict):
        raise SystemExit(f"Recipe {path!r} must be a flat YAML mapping of DistillationConfig fields.")
    fields = {field.name for field in dataclasses.fields(DistillationConfig) if field.init}
    for key in recipe:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else "; see `kd-hf distill --help` for the fields."
            raise SystemExit(f"Recipe {path!r}: unknown field `{key}`{hint}")
    parser = HfArgumentParser(DistillationConfig)
    parser.set_defaults(**recipe)
    (config,) = parser.parse_args_into_dataclasses(args=overrides)
    return config


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        usage = "\n".join(f"  kd-hf {name:8} RECIPE [--field value ...]   {text}" for name, text in COMMANDS.items())
        raise SystemExit(f"usage:\n{usage}")
    command, argv = argv[0], argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        HfArgumentParser(DistillationConfig).print_help()
        return
    config = parse_recipe(argv)

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    level = config.get_process_log_level()
    # kd_hf says what it decided (label re-ordering, resumed checkpoints) on the main process.
    logging.getLogger("kd_hf").setLevel(min(level, logging.INFO) if config.should_log else level)
    hf_logging.set_verbosity(level)

    from . import run

    getattr(run, command)(config)


if __name__ == "__main__":
    main()
