"""What a run reports and publishes: the final explanations, the card, and the Hub repos beside the student."""

from dataclasses import dataclass, field

from ..explain import EXPLAINERS
from ..options import RecipeOptions


@dataclass
class ReportOptions(RecipeOptions):
    """The final report's explanations and global view, the card, and where the teacher and the Space are pushed."""

    explanation_examples: int = field(
        default=20,
        metadata={
            "help": "Eval examples that teacher and student both explain in the final report and the card (0 skips "
            "explanations).",
        },
    )
    explanation_method: str = field(
        default="integrated_gradients",
        metadata={
            "help": "Explainer of the final report, from `kd_hf.explain.EXPLAINERS`: "
            + ", ".join(
                f"`{name}`" + (f" (needs {e.requires})" if e.requires else "") for name, e in EXPLAINERS.items()
            )
            + ".",
            "choices": list(EXPLAINERS),
        },
    )
    explanation_n_steps: int = field(
        default=32,
        metadata={"help": "Integration steps of `integrated_gradients` in the final report (>= 2)."},
    )
    card_examples: int = field(
        default=3,
        metadata={
            "help": "Example explanations shown in the card and offered by the Space (>= 0).",
        },
    )
    global_examples: int = field(
        default=0,
        metadata={
            "help": "Eval examples of the final report's global view of teacher and student (feature importance, "
            "surrogate rules, representations, robustness of explanations), shown in the card; 0 skips it (>= 0).",
        },
    )
    card_license: str | None = field(
        default=None,
        metadata={
            "help": "License of the student in its card (e.g. `apache-2.0`); defaults to the one in a local teacher's "
            "card, else `unknown`."
        },
    )
    hub_space_id: str | None = field(
        default=None,
        metadata={
            "help": "With `push_to_hub`, also create or update this Gradio Space (`user/name-demo`) showing the "
            "student's and the teacher's explanations."
        },
    )
    hub_teacher_id: str | None = field(
        default=None,
        metadata={
            "help": "With `push_to_hub` and a teacher that is a local folder: the repo it is published to, so that "
            "the card and the Space can link it (default `<hub_model_id>-teacher`)."
        },
    )
    hub_push_teacher: bool = field(
        default=True,
        metadata={
            "help": "With `push_to_hub`: publish a local teacher beside the student; false keeps it local (the card "
            "then names no base model, and `hub_space_id` is refused: the Space could not show the teacher)."
        },
    )
    export_onnx: str | None = field(
        default=None,
        metadata={
            "help": "At the end of `kd-hf distill`, export the student to ONNX as `kd-hf export` does: `fp32` writes "
            "`onnx/model.onnx`, `int8` also `onnx/model_quantized.onnx`; both are measured against the student and "
            "the teacher on the report's split (`export_results.json`), shown in the card's Deployment section and "
            "pushed with the student. Needs `pip install 'kd-hf[export]'`.",
            "choices": ["fp32", "int8"],
        },
    )

    RANGES = {
        "explanation_examples": (">= 0", "0 turns them off"),
        "explanation_n_steps": (">= 2", None),
        "card_examples": (">= 0", "0 turns them off"),
        "global_examples": (">= 0", "0 turns the global report off"),
    }
