"""Several teachers distilled into one student: their soft labels combined into one teacher's.

```yaml
teachers: [outputs/minilm-a, outputs/minilm-b]   # a recipe; the first is the reference (tokenizer, label order)
teacher_weights: [0.7, 0.3]
teacher_combination: probabilities               # or `logits`
```

`EnsembleTeacher` runs every teacher and returns one set of logits, so that the trainer, the teacher cache and the
evaluation treat the ensemble as one teacher. Each member's logits are first put in the first teacher's label order
(labels are matched by name, as for a single teacher), then combined:

- `probabilities` (default): the weighted mean of the members' probabilities at the distillation temperature T,
  returned as the logits `T · log Σᵢ wᵢ softmax(zᵢ / T)`, whose softmax at T is that mean (the usual ensemble
  soft label, e.g. Hinton et al., 2015, https://huggingface.co/papers/1503.02531);
- `logits`: the weighted mean of the logits, `Σᵢ wᵢ zᵢ` (a geometric mean of the probabilities).

Only logit-based losses (`soft_label`) work with an ensemble: attentions, hidden states and attributions belong to
one network, so the trainer refuses them with several teachers.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .pairing import align_labels


COMBINATIONS = ("probabilities", "logits")


class EnsembleTeacher(nn.Module):
    """Several classifiers over the same label set, answering as one (see the module docstring).

    Args:
        teachers (`list[PreTrainedModel]`): the members; they read the same inputs (same tokenizer or image
            processor), and the first one gives the label order and the `config`.
        weights (`list[float]`, *optional*): one non-negative weight per teacher, normalised to sum to 1; defaults
            to equal weights.
        combination (`str`, *optional*, defaults to `"probabilities"`): `probabilities` or `logits`.
        temperature (`float`, *optional*, defaults to 1.0): T of the probability average.
        label_mapping (`dict`, *optional*): teacher label -> reference label, for members that name classes
            differently.
    """

    def __init__(
        self,
        teachers: list[PreTrainedModel],
        weights: list[float] | None = None,
        combination: str = "probabilities",
        temperature: float = 1.0,
        label_mapping: dict | None = None,
    ):
        super().__init__()
        if len(teachers) < 2:
            raise ValueError("An ensemble needs at least two teachers; give one in `teacher_model_name_or_path`.")
        if combination not in COMBINATIONS:
            raise ValueError(f"`teacher_combination` must be one of {list(COMBINATIONS)}, got {combination!r}.")
        weights = [1.0] * len(teachers) if weights is None else list(weights)
        if len(weights) != len(teachers) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"`teacher_weights` {weights} must hold one non-negative weight per teacher ({len(teachers)}), "
                "not all zero."
            )
        self.teachers = nn.ModuleList(teachers)
        self.combination = combination
        self.temperature = temperature
        # Buffers, so that the teacher cache's fingerprint (a digest of the state dict) changes with them.
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))
        self.label_orders = [align_labels(t.config, teachers[0].config, label_mapping) for t in teachers]

    @property
    def config(self):
        """The reference (first) teacher's config: its labels are the ensemble's."""
        return self.teachers[0].config

    @property
    def dtype(self) -> torch.dtype:
        return self.teachers[0].dtype

    @property
    def names(self) -> list[str]:
        return [teacher.config.name_or_path for teacher in self.teachers]

    def forward(self, **inputs) -> SequenceClassifierOutput:
        inputs.pop("output_attentions", None), inputs.pop("output_hidden_states", None)
        members = []
        for teacher, order in zip(self.teachers, self.label_orders):
            logits = teacher(**inputs).logits.float()
            members.append(logits if order is None else logits[:, order])
        logits = torch.stack(members)  # [teachers, batch, labels]
        weights = self.weights.to(logits.device)[:, None, None]
        if self.combination == "logits":
            return SequenceClassifierOutput(logits=(weights * logits).sum(0))
        probabilities = (weights * (logits / self.temperature).softmax(-1)).sum(0)
        return SequenceClassifierOutput(logits=self.temperature * probabilities.clamp_min(1e-12).log())


def ensemble_of(teachers: list[PreTrainedModel], args) -> EnsembleTeacher:
    """`teachers` combined as the recipe says (`teacher_weights`, `teacher_combination`, `temperature`)."""
    return EnsembleTeacher(
        teachers, args.teacher_weights, args.teacher_combination, args.temperature, args.label_mapping
    )


def load_teacher(args, dtype: str | None = None, names: list[str] | None = None) -> PreTrainedModel | EnsembleTeacher:
    """The recipe's teacher: `teacher_model_name_or_path`, or an `EnsembleTeacher` of `teachers` (or of `names`),
    loaded in `dtype` (defaults to `args.teacher_dtype`)."""
    from .data import tokenizers_match
    from .models import load_model, load_processor

    image = args.is_image_task
    names = names or args.teachers or [args.teacher_model_name_or_path]
    models = [
        load_model(
            name, image, args.teacher_revision if len(names) == 1 else None, args.teacher_model_init_kwargs,
            args.trust_remote_code, dtype=dtype or args.teacher_dtype,
        )
        for name in names
    ]  # fmt: skip
    if len(models) == 1:
        return models[0]
    if not image:
        reference = load_processor(names[0], trust_remote_code=args.trust_remote_code)
        for name in names[1:]:
            if not tokenizers_match(reference, load_processor(name, trust_remote_code=args.trust_remote_code)):
                raise ValueError(
                    f"Teacher {name!r} tokenizes differently from {names[0]!r}; the teachers of an ensemble read the "
                    "same inputs. Distil from teachers that share a tokenizer, or one at a time."
                )
    return ensemble_of(models, args)
