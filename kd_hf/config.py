"""`DistillationConfig`: every knob of a kd_hf run, readable from a flat YAML recipe."""

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .explain import EXPLAINERS
from .losses import LOSS_OPTIONS, LOSS_REGISTRY, option_classes
from .losses.options import LossOptions, check_value


MODEL_INITS = ("checkpoint", "config", "teacher_layers")
TEACHER_DTYPES = ("auto", "bfloat16", "float16", "float32")


def _as_dict(value: dict | str | None, name: str) -> dict | None:
    """Recipes give dict fields as YAML mappings; the command line gives them as JSON strings."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{name}` must be a mapping or a JSON object string, got {value!r}: {error}") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise ValueError(f"`{name}` must be a mapping or a JSON object string, got {value!r}")
    return parsed  # `null` on the command line unsets a field the recipe sets


# The number each field must hold (interval notation, or `>= a` / `> a`), with what to say when it does not; read by
# `__post_init__` (HfArgumentParser passes field metadata on to argparse, so ranges cannot live there). The losses'
# own fields have theirs in their options class (`kd_hf.losses.options`).
_RANGES = {
    "teacher_layers_stride": (">= 1", None),
    "alpha": ("[0, 1]", "the hard-label weight"),
    "explanation_examples": (">= 0", "0 turns them off"),
    "explanation_n_steps": (">= 2", None),
    "card_examples": (">= 0", "0 turns them off"),
    "global_examples": (">= 0", "0 turns the global report off"),
    "augment_copies": (">= 0", "0 = no augmentation"),
    "eval_split_size": ("(0, 1)", None),
    "max_length": (">= 8", "tokens per text example"),
    "max_train_samples": (">= 1", "leave it unset to keep every example"),
    "max_eval_samples": (">= 1", "leave it unset to keep every example"),
}


@dataclass
class DistillationConfig(*option_classes(), TrainingArguments):
    r"""
    Configuration of a distillation run: the teacher, the student, the losses and the data, on top of every
    [`~transformers.TrainingArguments`] field. A recipe is a flat YAML file of these fields. Each loss's own fields
    (`temperature`, `attention_heads`, `attribution_method`, ...) come from its options class in `kd_hf.losses`,
    which this config inherits.

    The training objective is

        L = alpha * CE(y, student) + (1 - alpha) * sum_i loss_weights[i] * loss_i(student, teacher)

    where `loss_i` are the losses named in `loss_type` (see `kd_hf.losses.LOSS_REGISTRY`); the soft-label loss is the
    temperature-scaled divergence of Hinton et al. (2015), multiplied by `temperature**2` so that its gradients keep
    their scale when the temperature changes.

    `kd-hf train` uses the same config without a teacher: it fine-tunes the model named by `model_name_or_path`
    (or built from `model_config`) with plain cross-entropy.
    """

    # Teacher.
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher: a Hub id, a local folder, or an `offline:` alias (see `kd_hf.data.offline`)."},
    )
    teachers: list[str] | None = field(
        default=None,
        metadata={
            "help": "Several teachers (Hub ids or folders) whose soft labels are combined into one; the first is the "
            "reference (tokenizer, label order) and becomes `teacher_model_name_or_path`. Logit losses only."
        },
    )
    teacher_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per teacher in `teachers` (normalised); defaults to equal."}
    )
    teacher_combination: str = field(
        default="probabilities",
        metadata={
            "help": "How `teachers` are combined: `probabilities` (weighted mean at the temperature) or `logits` "
            "(weighted mean of logits).",
            "choices": ["probabilities", "logits"],
        },
    )
    teacher_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of the teacher on the Hub; `None` means `main`."}
    )
    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": 'Extra `from_pretrained` kwargs for the teacher, e.g. `{"dtype": "bfloat16"}`.'},
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision the teacher runs in: `auto` (as loaded), `bfloat16`, `float16` or `float32`. A "
            "bfloat16 teacher halves its memory and, on GPUs and CPUs with bf16 units, cuts its share of each step "
            "(docs/benchmarks.md, Overhead); the student keeps its own precision.",
            "choices": list(TEACHER_DTYPES),
        },
    )

    # Student (or, for `kd-hf train`, the model being trained).
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Student checkpoint: a Hub id, a local folder or an `offline:` alias. Needed when "
            "`model_init='checkpoint'`; with `model_init='config'` it is the config to start from."
        },
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of `model_name_or_path`; `None` means `main`."}
    )
    model_init_kwargs: dict | str | None = field(
        default=None, metadata={"help": 'Extra `from_pretrained` kwargs for the student, e.g. `{"dtype": "float32"}`.'}
    )
    model_init: str = field(
        default="checkpoint",
        metadata={
            "help": "How the student starts: `checkpoint` (weights of `model_name_or_path`), `config` (random "
            "weights from a config: `model_name_or_path`'s, else the teacher's, updated with `model_config`), or "
            "`teacher_layers` (the teacher's embeddings, head and every `teacher_layers_stride`-th layer, "
            "DistilBERT style).",
            "choices": list(MODEL_INITS),
        },
    )
    model_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Config values that override the base config, e.g. `{num_hidden_layers: 2, "
            "hidden_size: 128}`; with no base, include `model_type` (e.g. `vit`)."
        },
    )
    embedding_init: str = field(
        default="random",
        metadata={
            "help": "With `model_init='config'` and the teacher's tokenizer: `teacher` starts the student's embedding "
            "tables from the teacher's, projected onto their principal components to the student's width "
            "(`kd_hf.student_init`); `random` leaves them as the config initialises them.",
            "choices": ["random", "teacher"],
        },
    )
    prune_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "Cut the student's tokenizer and embedding table to the tokens its training texts use, the special "
            "tokens and every single character (`kd_hf.vocabulary`): the texts tokenize as before, and most of a "
            "small student's parameters are its embeddings. A WordPiece (BERT-like) tokenizer; saved with the "
            "student. With `embedding_init: teacher` the kept rows start from the teacher's."
        },
    )
    teacher_layers_stride: int = field(
        default=2,
        metadata={
            "help": "With `model_init='teacher_layers'`: keep teacher layers k-1, 2k-1, ... (k = this stride), "
            "so student layer m sits where teacher layer m*k does.",
        },
    )
    teacher_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "With `model_init='teacher_layers'`: the 0-based teacher layers to copy, in order; "
            "overrides `teacher_layers_stride`."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the Hub. Leave off unless you trust it."}
    )

    # Losses.
    loss_type: list[str] = field(
        default_factory=lambda: ["soft_label"],
        metadata={"help": "Distillation losses to sum, by registry name (see `kd_hf.losses.LOSS_REGISTRY`)."},
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per `loss_type` entry; `None` gives every loss weight 1."}
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the hard-label cross-entropy, in [0, 1]; the distillation losses get 1 - alpha. "
            "0 is pure distillation, 1 is plain fine-tuning.",
        },
    )
    teacher_cache: bool = field(
        default=False,
        metadata={
            "help": "Run the teacher once over the train and eval sets and store its logits (and attributions, with "
            "the `attribution` loss) with the dataset; later epochs and runs with the same teacher and data skip it. "
            "A dataset with an on-the-fly transform (random augmentation) or a stream stays uncached, with a warning."
        },
    )
    label_mapping: dict | str | None = field(
        default=None,
        metadata={
            "help": "Teacher label name -> student label name, when the two models name classes differently, "
            "e.g. `{LABEL_0: negative, LABEL_1: positive}`."
        },
    )

    peft_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Train the student through a PEFT adapter: the fields of a peft config (`peft_type` defaults to "
            "LORA), e.g. `{r: 8, lora_alpha: 16, target_modules: [query, value]}`; the classification head trains "
            "in full. Checkpoints hold the adapter."
        },
    )
    merge_adapter: bool = field(
        default=True,
        metadata={
            "help": "With `peft_config`: save (and push) the student merged into plain weights, loadable without "
            "peft, with the adapter kept in `adapter/`; false saves the adapter alone."
        },
    )

    # Evaluation, card and Hub.
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

    # Data.
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset: a Hub id, a local builder (`csv`, `json`, `imagefolder`, with `data_files`) or an "
            "offline corpus (`offline:rotten_tomatoes`, `offline:mnist`, `offline:digits`)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name, if any."})
    data_files: dict | str | None = field(
        default=None, metadata={"help": "Local files per split, e.g. `{train: train.csv, validation: dev.csv}`."}
    )
    text_columns: list[str] = field(
        default_factory=lambda: ["text"],
        metadata={"help": "Text column(s) of a text dataset; two columns are encoded as a sentence pair."},
    )
    image_column: str | None = field(
        default=None,
        metadata={"help": "Image column of an image dataset; setting it makes the task image classification."},
    )
    label_column: str = field(default="label", metadata={"help": "Column holding the class label."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default="validation",
        metadata={
            "help": "Split to evaluate on; it must exist, except `validation`: a dataset without that split has "
            "`eval_split_size` of the train split held out instead."
        },
    )
    transfer_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A transfer set: unlabelled texts added to the training split, from which the student learns the "
            "teacher's soft labels alone (a Hub id, a local builder with `transfer_data_files`, or "
            "`offline:rotten_tomatoes_plots`). Read through `text_columns`; any label it has is dropped."
        },
    )
    transfer_data_files: dict | str | None = field(
        default=None, metadata={"help": "Local files of the transfer set, e.g. `unlabelled.csv` or `{train: a.txt}`."}
    )
    transfer_split: str = field(default="train", metadata={"help": "Split of the transfer set to add."})
    augment_copies: int = field(
        default=0,
        metadata={
            "help": "Text distillation: add this many TinyBERT-style variants of each training text (words replaced by "
            "their nearest neighbours in the teacher's embedding space, or masked), which learn from the teacher's "
            "soft labels alone (`kd_hf.data.augment`); 0 adds none.",
        },
    )
    augment_word_prob: float = field(
        default=0.4, metadata={"help": "With `augment_copies`: chance that a word is replaced by a neighbour."}
    )
    augment_mask_prob: float = field(
        default=0.1, metadata={"help": "With `augment_copies`: chance that a word is replaced by the mask token."}
    )
    report_split: str | None = field(
        default="test",
        metadata={
            "help": "Split of the final report and the card, held out of training and of its evaluations "
            "(`eval_split`); a dataset without it is reported on `eval_split`, and the report says so. `null` "
            "reports on `eval_split`."
        },
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the train split held out when `eval_split` is missing, in (0, 1).",
        },
    )
    max_length: int = field(
        default=128,
        metadata={
            "help": "Maximum tokens per text example (truncation), >= 8.",
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many training examples (>= 1).",
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many eval examples (>= 1).",
        },
    )

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
        super().__post_init__()
        for name in (
            "teacher_model_init_kwargs", "model_init_kwargs", "model_config", "data_files", "label_mapping",
            "peft_config",
        ):  # fmt: skip
            setattr(self, name, _as_dict(getattr(self, name), name))
        # A scalar where a list is expected (`loss_type: soft_label`) is a list of one, not a list of letters.
        for name in _LIST_FIELDS:
            if isinstance(getattr(self, name), (str, int, float)):
                setattr(self, name, [getattr(self, name)])

        # Several teachers: the first is the reference, as if it were the only one.
        if self.teachers is not None:
            if len(self.teachers) < 2:
                raise ValueError(
                    "`teachers` lists two or more teachers; give a single one in `teacher_model_name_or_path`."
                )
            if self.teacher_model_name_or_path not in (None, self.teachers[0]):
                raise ValueError(
                    "Set either `teacher_model_name_or_path` or `teachers` (whose first entry is the reference teacher)."
                )
            self.teacher_model_name_or_path = self.teachers[0]
            if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teachers):
                raise ValueError(f"`teacher_weights` needs one weight per teacher ({len(self.teachers)}).")

        # Fields with `choices` (model_init, ...) hold one of them; fields of `_RANGES` (alpha, the step counts, ...)
        # hold a number within theirs (or None where the field is optional); each loss checks its own options.
        for own in dataclasses.fields(self):
            if own.name in _OWN_FIELDS:
                spec, hint = _RANGES.get(own.name, (None, None))
                check_value(own.name, getattr(self, own.name), own.metadata.get("choices"), spec, hint)
        for options in type(self).__mro__:
            if issubclass(options, LossOptions) and not issubclass(options, TrainingArguments):
                options.check(self)

        loaded_dtype = (self.teacher_model_init_kwargs or {}).get("dtype")
        if self.teacher_dtype != "auto" and loaded_dtype not in (None, "auto", self.teacher_dtype):
            raise ValueError(
                f"`teacher_dtype` is {self.teacher_dtype!r} but `teacher_model_init_kwargs` loads the teacher in "
                f"{loaded_dtype!r}; set only `teacher_dtype`."
            )

        unknown = [name for name in self.loss_type if name not in LOSS_REGISTRY]
        if unknown:
            raise ValueError(
                f"Unknown loss {unknown} in `loss_type`; registered losses are {sorted(LOSS_REGISTRY)}. "
                "Register your own with `kd_hf.losses.register_loss`."
            )
        missing = [
            name for name in self.loss_type if name in LOSS_OPTIONS and not isinstance(self, LOSS_OPTIONS[name])
        ]
        if missing:
            options = LOSS_OPTIONS[missing[0]].__name__
            raise ValueError(
                f"Loss {missing[0]!r} has options ({options}) that `DistillationConfig` was defined without (the loss "
                f"was registered after `kd_hf.config` was imported): use a config that has them, e.g. "
                f"`@dataclass class MyConfig({options}, DistillationConfig): pass`."
            )
        if self.loss_weights is None:
            self.loss_weights = [1.0] * len(self.loss_type)
        if len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"`loss_weights` has {len(self.loss_weights)} entries but `loss_type` has {len(self.loss_type)} "
                f"({self.loss_type}); give one weight per loss."
            )
        if any(weight < 0 for weight in self.loss_weights):
            raise ValueError(f"`loss_weights` must be >= 0, got {self.loss_weights}.")
        if not (0 <= self.augment_word_prob and 0 <= self.augment_mask_prob and
                self.augment_word_prob + self.augment_mask_prob <= 1):  # fmt: skip
            raise ValueError(
                "`augment_word_prob` and `augment_mask_prob` must be >= 0 with a sum <= 1, got "
                f"{self.augment_word_prob} and {self.augment_mask_prob}."
            )
        if self.has_transfer_set and self.is_image_task:
            raise ValueError("A transfer set (`transfer_dataset_name`) adds texts; leave it out for images.")
        if self.augment_copies and self.is_image_task:
            raise ValueError("`augment_copies` augments texts; leave it at 0 for images.")
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
        if self.teacher_layers is not None and (not self.teacher_layers or min(self.teacher_layers) < 0):
            raise ValueError(
                f"`teacher_layers` must be a non-empty list of 0-based layer indices, got {self.teacher_layers}."
            )
        if self.peft_config and not self.merge_adapter and self.model_init != "checkpoint":
            raise ValueError(
                "`merge_adapter: false` saves the adapter alone, which needs its base weights on disk or the Hub: use "
                "`model_init: checkpoint` with `model_name_or_path`, or keep `merge_adapter: true`."
            )
        if not self.text_columns and self.image_column is None:
            raise ValueError("Set `text_columns` (text classification) or `image_column` (image classification).")
        if len(self.text_columns) > 2 and self.image_column is None:
            raise ValueError(f"`text_columns` takes one column or a sentence pair, got {self.text_columns}.")

    def __getstate__(self) -> dict:
        # Trainer pickles its arguments into every checkpoint (`training_args.bin`): never the token with them.
        state = self.__dict__.copy()
        if state.get("hub_token") is not None:
            state["hub_token"] = None
        return state

    @property
    def is_image_task(self) -> bool:
        return self.image_column is not None

    @property
    def has_transfer_set(self) -> bool:
        return bool(self.transfer_dataset_name or self.transfer_data_files)


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
