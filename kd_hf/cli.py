"""The `kd-hf` command line.

```bash
kd-hf train recipes/offline_text_teacher.yaml          # fine-tune a teacher, no distillation
kd-hf distill recipes/offline_text.yaml --max_steps 50  # any recipe field can be overridden
kd-hf eval outputs/student --dataset offline:rotten_tomatoes  # the teacher comes from the student's card
kd-hf export outputs/student --quantize int8             # onnx/ and export_results.json, parity printed
kd-hf push outputs/student --repo-id me/student --space-id me/student-demo
kd-hf demo outputs/student                              # the Gradio demo on http://127.0.0.1:7860
accelerate launch -m kd_hf.cli distill recipes/offline_text.yaml
torchrun --nproc_per_node 2 -m kd_hf.cli distill recipes/offline_text.yaml
```
"""

import argparse
import logging
import sys

from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from .config import DistillationConfig
from .recipe import parse_recipe  # also imported from here by tests, benchmarks and scripts


COMMANDS = {
    "train": "fine-tune the model of a recipe on its dataset, without a teacher",
    "distill": "distil the recipe's teacher into its student",
    "explain": "compare a student's and its teacher's explanations on a dataset sample",
    "eval": "report a student vs its teacher: accuracy, agreement, explanations, size, speed",
    "export": "export a student to ONNX (and int8) and measure what survives: agreement, explanations, speed",
    "push": "upload a student folder with its card to the Hub, and its Gradio Space",
    "demo": "run the Gradio demo: teacher and student predictions and explanations side by side",
}


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
    parser.add_argument(
        "--latency_repeats", type=int, default=10, help="timed rounds per batch size, student and teacher in turns"
    )
    parser.add_argument(
        "--global_examples", type=int, default=200,
        help="examples of the global report: feature importance, surrogate rules, representations, robustness "
        "(0 skips it)",
    )  # fmt: skip
    parser.add_argument("--output_dir", default="eval_report")
    return parser


def export_parser() -> argparse.ArgumentParser:
    from .export import DEFAULT_OPSET, QUANTIZATIONS

    parser = argparse.ArgumentParser(
        prog="kd-hf export",
        description="Export a student folder to onnx/model.onnx (and onnx/model_quantized.onnx), measure both against "
        "the PyTorch student and its teacher on the split its report used, and write export_results.json.",
    )
    parser.add_argument("folder", help="the student: a local folder written by `kd-hf distill` or `save_pretrained`")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None, help="also write the int8 graph")
    parser.add_argument(
        "--opset", type=_at_least_one, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--dataset", default=None, help="measure on another dataset than the student's recipe (e.g. offline:mnist)"
    )
    parser.add_argument(
        "--eval-split", "--eval_split", dest="eval_split", default=None,
        help="the split to measure on (default: the one the student's report used)",
    )  # fmt: skip
    parser.add_argument(
        "--max-examples", "--max_examples", dest="max_examples", type=_at_least_one, default=None,
        help="measure on a seeded random sample this big",
    )  # fmt: skip
    parser.add_argument("--teacher", default=None, help="the teacher; defaults to the one in the student's card")
    parser.add_argument("--no-teacher", dest="use_teacher", action="store_false", help="measure the student alone")
    parser.add_argument(
        "-n", "--explanation-examples", "--explanation_examples", dest="explanation_examples", type=int, default=50,
        help="examples explained by occlusion on every model (0 skips explanations)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-repeats", "--latency_repeats", dest="latency_repeats", type=_at_least_one, default=30,
        help="timed rounds per batch size",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=_at_least_one, default=1,
        help="CPU threads of PyTorch and of onnxruntime while measuring (default 1: the same for both, and steady on a "
        "busy machine)",
    )  # fmt: skip
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


def _export(argv: list[str]) -> None:
    from .export import RESULTS_FILE, default_teacher, evaluation_config, export_student, parity_tables

    options = export_parser().parse_args(argv)
    config = evaluation_config(options.folder, options.dataset, options.eval_split, options.max_examples)
    teacher = (options.teacher or default_teacher(options.folder)) if options.use_teacher else None
    if teacher is None and options.use_teacher:
        print("No --teacher given and none in the student's card: measuring the student alone.")
    try:
        results = export_student(
            options.folder, options.quantize, options.opset, teacher=teacher, config=config,
            explanation_examples=options.explanation_examples, latency_repeats=options.latency_repeats,
            threads=options.threads,
        )  # fmt: skip
    except ModuleNotFoundError as error:  # the `export` extra is missing: the message says what to install
        raise SystemExit(str(error)) from None
    print(parity_tables(results))
    print(f"Wrote {options.folder}/onnx/ and {options.folder}/{RESULTS_FILE}")


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


TOOLS = {"explain": _explain, "eval": _eval, "export": _export, "push": _push, "demo": _demo}


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

    trainer = getattr(run, command)(config)
    # Under `accelerate launch`, shut the process group down before the interpreter does: gloo's threads torn down at
    # exit abort a finished run now and then ("terminate called without an active exception", exit status -6).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
