"""The teacher and the student of a run: where each comes from and how it is loaded or built."""

from dataclasses import dataclass, field

from ..options import RecipeOptions


MODEL_INITS = ("checkpoint", "config", "teacher_layers")
TEACHER_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class TeacherOptions(RecipeOptions):
    """The teacher, or several teachers combined into one."""

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

    shard_teacher: bool = field(
        default=False,
        metadata={
            "help": "Under FSDP2, shard the teacher over the processes for inference as the student is, each holding "
            "a part, gathered layer by layer in each forward pass: for a teacher too large to copy on every GPU "
            "(DeepSpeed ZeRO-3 shards it by itself). Not with `teacher_cache`, which runs it on the main process alone.",
        },
    )

    MAPPINGS = ("teacher_model_init_kwargs",)

    def validate(self) -> None:
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
        loaded_dtype = (self.teacher_model_init_kwargs or {}).get("dtype")
        if self.teacher_dtype != "auto" and loaded_dtype not in (None, "auto", self.teacher_dtype):
            raise ValueError(
                f"`teacher_dtype` is {self.teacher_dtype!r} but `teacher_model_init_kwargs` loads the teacher in "
                f"{loaded_dtype!r}; set only `teacher_dtype`."
            )


@dataclass
class StudentOptions(RecipeOptions):
    """The student (or, for `kd-hf train`, the model being trained): its checkpoint, or how it is built."""

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
            "DistilBERT style; cut to a smaller `hidden_size`, `num_attention_heads` or `intermediate_size` in "
            "`model_config` by the teacher's activations on 1,024 training examples, Minitron style).",
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
            "help": "Cut the student's tokenizer and embedding table to the tokens its training and evaluation texts "
            "use, the special tokens and every single character (`kd_hf.vocabulary`): those texts tokenize as "
            "before, so attention and hidden-state losses still line up, and most of a small student's parameters "
            "are its embeddings. A WordPiece (BERT-like) tokenizer; saved with the student. With `embedding_init: "
            "teacher` the kept rows start from the teacher's."
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

    RANGES = {"teacher_layers_stride": (">= 1", None)}
    MAPPINGS = ("model_init_kwargs", "model_config")

    def validate(self) -> None:
        if self.teacher_layers is not None and (not self.teacher_layers or min(self.teacher_layers) < 0):
            raise ValueError(
                f"`teacher_layers` must be a non-empty list of 0-based layer indices, got {self.teacher_layers}."
            )
