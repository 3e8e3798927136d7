"""`DistillationConfig`: every knob of a kd_hf run, readable from a flat YAML recipe.

The config is made of groups of fields (`kd_hf.options.RecipeOptions`), each with its checks: the teacher and the
student (`models.py`), the objective (`objective.py`), the data (`data.py`), the report and the Hub (`report.py`), and
the options of each loss (`kd_hf.losses`). This module adds the checks across groups.
"""

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..losses import option_classes
from ..options import RecipeOptions
from .data import DataOptions
from .models import MODEL_INITS, TEACHER_DTYPES, StudentOptions, TeacherOptions
from .objective import ObjectiveOptions
from .report import ReportOptions


__all__ = [
    "MODEL_INITS", "TEACHER_DTYPES", "DataOptions", "DistillationConfig", "ObjectiveOptions", "ReportOptions",
    "StudentOptions", "TeacherOptions",
]  # fmt: skip


logger = logging.getLogger(__name__)


# Dataclass fields come from the bases last to first: `--help` lists the teacher's, the student's, the losses', the
# data's, the report's and the objective's after TrainingArguments' own.
@dataclass
class DistillationConfig(
    ObjectiveOptions,
    ReportOptions,
    DataOptions,
    *reversed(option_classes()),
    StudentOptions,
    TeacherOptions,
    TrainingArguments,
):
    r"""
    Configuration of a distillation run: the teacher, the student, the losses and the data, on top of every
    [`~transformers.TrainingArguments`] field. A recipe is a flat YAML file of these fields, which come in groups
    that this config inherits: the teacher's and the student's (`TeacherOptions`, `StudentOptions`), each loss's own
    (`temperature`, `attention_heads`, `attribution_method`, ...; `kd_hf.losses`), the data's (`DataOptions`), the
    report's and the Hub's (`ReportOptions`), and the objective's (`ObjectiveOptions`).

    The training objective is

        L = alpha * CE(y, student) + (1 - alpha) * sum_i loss_weights[i] * loss_i(student, teacher)

    where `loss_i` are the losses named in `loss_type` (see `kd_hf.losses.LOSS_REGISTRY`); the soft-label loss is the
    temperature-scaled divergence of Hinton et al. (2015), multiplied by `temperature**2` so that its gradients keep
    their scale when the temperature changes.

    `kd-hf train` uses the same config without a teacher: it fine-tunes the model named by `model_name_or_path`
    (or built from `model_config`) with plain cross-entropy.
    """

    # Output folder.
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an `output_dir` that holds a run: delete its checkpoints instead of resuming from "
            "the last complete one. Without it, a rerun whose training fields differ from the recorded recipe "
            "(`kd_hf_recipe.json`) is refused."
        },
    )

    def __post_init__(self):
        # bf16 autocast runs on CPUs too (several times faster where they have bf16 units), but TrainingArguments takes
        # it for a GPU setting without `use_cpu`: a recipe that asks for bf16 then trains on either, unchanged.
        if (self.bf16 or self.bf16_full_eval) and not self.use_cpu and not torch.accelerator.is_available():
            logger.info("`bf16` on a machine without an accelerator: bf16 autocast on the CPU (`use_cpu: true`).")
            self.use_cpu = True
        super().__post_init__()
        # A scalar where a list is expected (`loss_type: soft_label`) is a list of one, not a list of letters.
        for name in _LIST_FIELDS:
            if isinstance(getattr(self, name), (str, int, float)):
                setattr(self, name, [getattr(self, name)])

        # Every field with `choices` holds one of them, and every number is within its group's `RANGES` (or None
        # where the field is optional); then each group checks what spans its fields.
        groups = [cls for cls in type(self).__mro__ if issubclass(cls, RecipeOptions) and
                  not issubclass(cls, TrainingArguments)]  # fmt: skip
        for group in groups:
            group.check(self)
        for group in groups:
            if "validate" in vars(group):
                group.validate(self)
        self._check_student_sources()

    def _check_student_sources(self) -> None:
        """What the student is built from must be there: a teacher to copy layers or embeddings from, a base config."""
        if self.model_init == "teacher_layers" and self.teacher_model_name_or_path is None:
            raise ValueError("`model_init='teacher_layers'` copies teacher layers: set `teacher_model_name_or_path`.")
        if self.model_init == "config" and self.model_name_or_path is None and self.teacher_model_name_or_path is None:
            if not (self.model_config or {}).get("model_type"):
                raise ValueError(
                    "`model_init='config'` without `model_name_or_path` or a teacher needs `model_type` in "
                    "`model_config` (e.g. `{model_type: vit, num_hidden_layers: 4}`)."
                )
        if self.embedding_init == "teacher" and (
            self.model_init != "config" or self.teacher_model_name_or_path is None or self.model_name_or_path
        ):
            raise ValueError(
                "`embedding_init: teacher` projects the teacher's embeddings into a student built from its config: "
                "set `model_init: config` and a teacher, without `model_name_or_path` (the student reads the "
                "teacher's tokenizer)."
            )
        if self.prune_vocabulary and self.is_image_task:
            raise ValueError("`prune_vocabulary` cuts a text vocabulary; leave it false for images.")
        if self.peft_config and not self.merge_adapter and self.model_init != "checkpoint":
            raise ValueError(
                "`merge_adapter: false` saves the adapter alone, which needs its base weights on disk or the Hub: use "
                "`model_init: checkpoint` with `model_name_or_path`, or keep `merge_adapter: true`."
            )

    def __getstate__(self) -> dict:
        # Trainer pickles its arguments into every checkpoint (`training_args.bin`): never the token with them.
        state = self.__dict__.copy()
        if state.get("hub_token") is not None:
            state["hub_token"] = None
        return state


# What kd_hf adds to `TrainingArguments`.
_OWN_FIELDS = frozenset(f.name for f in dataclasses.fields(DistillationConfig)) - frozenset(
    f.name for f in dataclasses.fields(TrainingArguments)
)


def _is_list(annotation) -> bool:
    unions = (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if typing.get_origin(annotation) in unions else (annotation,)
    return any(typing.get_origin(option) is list for option in options)


# kd_hf's list fields, where a scalar given for one is read as a list of one.
_LIST_FIELDS = frozenset(
    f.name for f in dataclasses.fields(DistillationConfig) if f.name in _OWN_FIELDS and _is_list(f.type)
)
