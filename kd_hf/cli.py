"""The `kd-hf` command line.

```bash
kd-hf train recipes/offline_text_teacher.yaml          # fine-tune a teacher, no distillation
kd-hf distill recipes/offline_text.yaml --max_steps 50  # any recipe field can be overridden
accelerate launch -m kd_hf.cli distill recipes/offline_text.yaml
torchrun --nproc_per_node 2 -m kd_hf.cli distill recipes/offline_text.yaml
```
"""

import argparse
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
    "explain": "compare a student's and its teacher's explanations on a dataset sample",
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


def explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd-hf explain", description="Teacher vs student explanations: HTML report, PNGs and JSON figures."
    )
    parser.add_argument("model", help="the student: a local folder or a Hub id")
    parser.add_argument("--teacher", required=True, help="the teacher: a local folder or a Hub id")
    parser.add_argument("--dataset", required=True, help="e.g. offline:rotten_tomatoes, or a Hub dataset id")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--text_columns", nargs="+", default=["text"])
    parser.add_argument("--image_column", default=None, help="set for image datasets")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("-n", "--num_examples", type=int, default=50)
    parser.add_argument("--method", default="integrated_gradients", help="integrated_gradients, saliency, ...")
    parser.add_argument("--n_steps", type=int, default=32, help="integration steps of integrated gradients")
    parser.add_argument("--output_dir", default="explanation_report")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        usage = "\n".join(f"  kd-hf {name:8} {text}" for name, text in COMMANDS.items())
        raise SystemExit(f"usage:\n{usage}\n(train and distill take RECIPE [--field value ...]; explain takes --help)")
    command, argv = argv[0], argv[1:]
    if command == "explain":
        from . import run

        options = vars(explain_parser().parse_args(argv))
        report = run.explain(
            options.pop("model"), options.pop("teacher"), options.pop("output_dir"), options.pop("dataset"),
            options.pop("split"), options.pop("num_examples"), options.pop("method"), options.pop("n_steps"),
            **options,
        )  # fmt: skip
        print(f"Wrote {report}")
        return
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
