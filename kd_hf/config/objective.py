"""The objective of a run: which distillation losses, their weights against the hard labels, and how the student
trains (the teacher's outputs cached, the label mapping between the two models, an adapter)."""

from dataclasses import dataclass, field

from ..losses import LOSS_OPTIONS, LOSS_REGISTRY
from ..options import RecipeOptions


@dataclass
class ObjectiveOptions(RecipeOptions):
    """`L = alpha * CE(y, student) + (1 - alpha) * sum_i loss_weights[i] * loss_i(student, teacher)`, and how the
    student trains."""

    loss_type: list[str] = field(
        default_factory=lambda: ["soft_label"],
        metadata={"help": "Distillation losses to sum, by registry name (see `kd_hf.losses.LOSS_REGISTRY`)."},
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per `loss_type` entry; `None` gives every loss weight 1."}
    )
    loss_steps: list[int] | None = field(
        default=None,
        metadata={
            "help": "One per `loss_type` entry: the optimizer steps that loss trains for, from the start; 0 (and "
            "`None`, for every loss) is the whole run. `[0, 1000, 1000]` with `[soft_label, attention, hidden_state]` "
            "is TinyBERT's two stages: the teacher's attention maps and hidden states for 1,000 steps, its soft labels "
            "throughout. Once no loss reads the teacher's internals, `teacher_cache` serves its logits and the teacher "
            "stops running.",
        },
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
            "A dataset with an on-the-fly transform (random augmentation) or a stream stays uncached, with a warning; so "
            "do the logits when a loss reads the teacher's internals (attention maps, hidden states) for the whole "
            "run, which needs the teacher at every step; stopped early by `loss_steps`, the cache serves the rest."
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
    weight_averaging_steps: int = field(
        default=0,
        metadata={
            "help": "End with the average of the student's weights over the last N optimizer steps (a uniform mean, "
            "one sample every `weight_averaging_interval` steps counted back from the last), as stochastic weight "
            "averaging does: the saved student, its report and card are the average's. 0 keeps the last weights. "
            "Checkpoints keep the running average, so a resumed run ends as an uninterrupted one."
        },
    )
    weight_averaging_interval: int = field(
        default=1, metadata={"help": "With `weight_averaging_steps`: average the weights after every n-th step."}
    )

    RANGES = {
        "alpha": ("[0, 1]", "the hard-label weight"),
        "weight_averaging_steps": (">= 0", "0 keeps the last weights"),
        "weight_averaging_interval": (">= 1", "1 averages the weights after every step"),
    }
    MAPPINGS = ("label_mapping", "peft_config")

    def validate(self) -> None:
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
        self._fill_per_loss("loss_weights", 1.0, "one weight per loss")
        self._fill_per_loss("loss_steps", 0, "one step count per loss (0 = the whole run)")
        if self.alpha == 0 and all(self.loss_steps):
            raise ValueError(
                f"With `alpha: 0` and `loss_steps` {self.loss_steps}, nothing trains the student after step "
                f"{max(self.loss_steps)}: set one loss's steps to 0 (the whole run), or raise `alpha` so that the hard "
                "labels train it from there."
            )

        if self.weight_averaging_steps and (self.fsdp or self.deepspeed):
            raise ValueError(
                "`weight_averaging_steps` averages whole weights on each process, which FSDP and DeepSpeed shard: "
                "leave it at 0 under them, or train with DDP (`accelerate launch` without an FSDP or DeepSpeed config)."
            )
        if self.weight_averaging_steps and self.load_best_model_at_end:
            raise ValueError(
                "`weight_averaging_steps` ends the run with the average of its last weights and "
                "`load_best_model_at_end` with its best checkpoint's: set only one."
            )

    def _fill_per_loss(self, name: str, default, what: str) -> None:
        """Check a field that holds one number >= 0 per `loss_type` entry; `None` gives every loss `default`."""
        values = getattr(self, name)
        if values is None:
            values = [default] * len(self.loss_type)
            setattr(self, name, values)
        if len(values) != len(self.loss_type):
            raise ValueError(
                f"`{name}` has {len(values)} entries but `loss_type` has {len(self.loss_type)} ({self.loss_type}); "
                f"give {what}."
            )
        if any(value < 0 for value in values):
            raise ValueError(f"`{name}` must be >= 0, got {values}.")
