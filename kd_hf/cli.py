"""The `kd-hf` command line.

```bash
kd-hf train recipes/offline_text_teacher.yaml          # fine-tune a teacher, no distillation
kd-hf distill recipes/offline_text.yaml --max_steps 50  # any recipe field can be overridden
kd-hf eval outputs/student --dataset offline:rotten_tomatoes  # the teacher comes from the student's card
kd-hf push outputs/student --repo-id me/student --space-id me/student-demo
kd-hf demo outputs/student                              # the Gradio demo on http://127.0.0.1:7860
accelerate launch -m kd_hf.cli distill recipes/offline_text.yaml
torchrun --nproc_per_node 2 -m kd_hf.cli distill recipes/offline_text.yaml
```
"""

import argparse
import dataclasses
import difflib
import logging
import os
import sys
import typing

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool
from transformers.utils import logging as hf_logging

from .config import DistillationConfig


COMMANDS = {
    "train": "fine-tune the model of a recipe on its dataset, without a teacher",
    "distill": "distil the recipe's teacher into its student",
    "explain": "compare a student's and its teacher's explanations on a dataset sample",
    "eval": "report a student vs its teacher: accuracy, agreement, explanations, size, speed",
    "push": "upload a student folder with its card to the Hub, and its Gradio Space",
    "demo": "run the Gradio demo: teacher and student predictions and explanations side by side",
}


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


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="e.g. offline:rotten_tomatoes, or a Hub dataset id")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument(
        "--data_files", nargs="+", default=None, metavar="SPLIT=PATH", help="local files, e.g. validation=dev.csv"
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--text_columns", nargs="+", default=["text"])
    parser.add_argument("--image_column", default=None, help="set for image datasets")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--method", default="integrated_gradients", help="integrated_gradients, saliency, ...")
    parser.add_argument("--n_steps", type=int, default=32, help="integration steps of integrated gradients")


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _data_files(pairs: list[str] | None) -> dict | None:
    if not pairs:
        return None
    if not all("=" in pair for pair in pairs):
        raise SystemExit(f"--data_files takes SPLIT=PATH pairs (e.g. validation=dev.csv), got {pairs}.")
    files = dict(pair.split("=", 1) for pair in pairs)
    return {"train": next(iter(files.values())), **files}  # a dataset needs a train split, even to evaluate


def explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd-hf explain", description="Teacher vs student explanations: HTML report, PNGs and JSON figures."
    )
    parser.add_argument("model", help="the student: a local folder or a Hub id")
    parser.add_argument("--teacher", required=True, help="the teacher: a local folder or a Hub id")
    _add_data_arguments(parser)
    parser.add_argument("-n", "--num_examples", type=_at_least_one, default=50)
    parser.add_argument("--output_dir", default="explanation_report")
    return parser


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd-hf eval",
        description="Student vs teacher: accuracy, agreement, explanations, size and speed "
        "(eval_results.json, eval_report.md, PNGs).",
    )
    parser.add_argument("model", help="the student: a local folder or a Hub id")
    parser.add_argument("--teacher", default=None, help="the teacher; defaults to the one in the student's card")
    _add_data_arguments(parser)
    parser.add_argument(
        "--max_eval_samples", type=_at_least_one, default=None, help="evaluate on a random sample this big"
    )
    parser.add_argument("--max_length", type=int, default=128, help="maximum tokens per text")
    parser.add_argument("-n", "--explanation_examples", type=int, default=20, help="examples both models explain")
    parser.add_argument("--latency_repeats", type=int, default=10, help="timed forward passes per batch size")
    parser.add_argument(
        "--global_examples", type=int, default=200,
        help="examples of the global report: feature importance, surrogate rules, representations, robustness "
        "(0 skips it)",
    )  # fmt: skip
    parser.add_argument("--output_dir", default="eval_report")
    return parser


def push_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd-hf push",
        description="Upload a student folder (weights, card, explanations) to the Hub, and its Gradio Space. "
        "The token comes from HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("folder", help="the output folder of `kd-hf distill`")
    parser.add_argument("--repo-id", "--repo_id", dest="repo_id", required=True, help="e.g. me/minilm-student")
    parser.add_argument("--space-id", "--space_id", dest="space_id", default=None, help="e.g. me/minilm-student-demo")
    parser.add_argument(
        "--teacher-repo-id", "--teacher_repo_id", dest="teacher_repo_id", default=None,
        help="where a teacher that was a local folder is published (default: <repo-id>-teacher); if its folder is "
        "gone, the repo it was already published to",
    )  # fmt: skip
    parser.add_argument(
        "--no-teacher", dest="push_teacher", action="store_false",
        help="keep a local teacher local: the model alone is published (no --space-id), its card names no base model",
    )  # fmt: skip
    parser.add_argument("--private", action="store_true", help="create private repositories")
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds to wait for the Hub to answer before giving up (default 60)"
    )
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd-hf demo", description="The Gradio demo of a student (the same app as its Hub Space), run locally."
    )
    parser.add_argument("student", help="the student: a local folder or a Hub id")
    parser.add_argument("--teacher", default=None, help="the teacher; defaults to the one in the student's card")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    return parser


def _demo(argv: list[str]) -> None:
    from .demo import launch_demo

    options = demo_parser().parse_args(argv)
    launch_demo(
        options.student, options.teacher, server_name=options.host, server_port=options.port, share=options.share
    )


def _explain(argv: list[str]) -> None:
    from . import run

    options = vars(explain_parser().parse_args(argv))
    options["data_files"] = _data_files(options["data_files"])
    report = run.explain(
        options.pop("model"), options.pop("teacher"), options.pop("output_dir"), options.pop("dataset"),
        options.pop("split"), options.pop("num_examples"), options.pop("method"), options.pop("n_steps"),
        **options,
    )  # fmt: skip
    print(f"Wrote {report}")


def _eval(argv: list[str]) -> None:
    from .evaluation import REPORT_FILE, evaluate_student
    from .hub import read_card
    from .models import resolve_model_path
    from .report import global_summary, results_tables

    options = eval_parser().parse_args(argv)
    teacher = options.teacher or read_card(resolve_model_path(options.model)).get("teacher")
    if teacher is None:
        print("No --teacher given and none in the student's card: reporting the student alone.")
    results = evaluate_student(
        options.model, teacher, options.dataset, output_dir=options.output_dir,
        explanation_examples=options.explanation_examples, explanation_method=options.method,
        explanation_n_steps=options.n_steps, latency_repeats=options.latency_repeats,
        global_examples=options.global_examples,
        dataset_config_name=options.dataset_config_name, data_files=_data_files(options.data_files),
        eval_split=options.split,
        text_columns=options.text_columns, image_column=options.image_column, label_column=options.label_column,
        max_eval_samples=options.max_eval_samples, max_length=options.max_length,
    )  # fmt: skip
    print(results_tables(results))
    if results.get("global"):
        print(global_summary(results["global"]))
    print(f"Wrote {options.output_dir}/{REPORT_FILE} and eval_results.json")


def _push(argv: list[str]) -> None:
    from .hub import check_repo_id, push_student

    options = push_parser().parse_args(argv)
    try:
        # Every id is checked before anything is sent: a bad Space id must not leave the model pushed alone.
        check_repo_id(options.repo_id, "--repo-id")
        if options.space_id is not None:
            check_repo_id(options.space_id, "--space-id")
        urls = push_student(
            options.folder, options.repo_id, options.space_id, options.private, timeout=options.timeout,
            teacher_repo_id=options.teacher_repo_id, push_teacher=options.push_teacher,
        )  # fmt: skip
    except (ConnectionError, FileNotFoundError, ValueError) as error:  # HubIdError is a ValueError
        raise SystemExit(str(error)) from None
    for kind, url in urls.items():
        print(f"{kind}: {url}")


TOOLS = {"explain": _explain, "eval": _eval, "push": _push, "demo": _demo}


# Errors whose message is written for the user (a bad recipe, missing files, a non-finite loss): the `kd-hf`
# program prints them alone, on one line.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def main(argv: list[str] | None = None) -> None:
    """Run a `kd-hf` command.

    As the `kd-hf` program (no `argv`), a bad input ends it with one line, `kd-hf <command>: <what to fix>`, and
    exit status 1, without a traceback. Called with `argv` (tests, scripts), the error is raised as it is, with its
    type and traceback.
    """
    if argv is not None:
        return _main(argv)
    try:
        _main(sys.argv[1:])
    except USER_ERRORS as error:
        raise SystemExit(f"kd-hf {sys.argv[1]}: {' '.join(str(error).split())}") from None


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        usage = "\n".join(f"  kd-hf {name:8} {text}" for name, text in COMMANDS.items())
        raise SystemExit(
            f"usage:\n{usage}\n(train and distill take RECIPE [--field value ...]; the others take --help)"
        )
    command, argv = argv[0], argv[1:]
    if command in TOOLS:
        TOOLS[command](argv)
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
