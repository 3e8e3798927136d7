"""What the intermediate losses share: which student layer learns from which teacher layer, and masked averages.

Layers are numbered from 1 (the first transformer block) to L, as in the papers; 0 is the embedding output, which
only `hidden_states` has (`hidden_states[0]`); `attentions[m - 1]` belongs to layer m.
"""

from dataclasses import dataclass, field

import torch

from .options import LossOptions


def layer_pairs(num_student: int, num_teacher: int, spec: str | list[int] = "uniform") -> list[tuple[int, int]]:
    """`(student_layer, teacher_layer)` pairs, 1-based.

    Args:
        num_student (`int`): student layers L_S.
        num_teacher (`int`): teacher layers L_T.
        spec (`str` or `list[int]`, *optional*, defaults to `"uniform"`):
            `uniform`: student layer m learns from teacher layer m * L_T / L_S (TinyBERT's g(m); 12 -> 4 gives teacher
            layers 3, 6, 9, 12); `last`: the last layers only (MiniLM); or one teacher layer per student layer.
    """
    if spec == "uniform":
        if num_teacher % num_student:
            raise ValueError(
                f"A uniform layer map needs the teacher's {num_teacher} layers to be a multiple of the student's "
                f"{num_student}; give `layer_map` as one teacher layer per student layer, or use `last`."
            )
        step = num_teacher // num_student
        return [(m, m * step) for m in range(1, num_student + 1)]
    if spec == "last":
        return [(num_student, num_teacher)]
    teacher_layers = list(spec)
    if len(teacher_layers) != num_student or not all(0 <= t <= num_teacher for t in teacher_layers):
        raise ValueError(
            f"`layer_map` {teacher_layers} must give one teacher layer in [0, {num_teacher}] for each of the "
            f"student's {num_student} layers (0 is the embeddings, for hidden states only)."
        )
    return list(zip(range(1, num_student + 1), teacher_layers))


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens of each example: `values` is `[batch, tokens]`, `mask` 1 for real tokens."""
    if mask is None:
        return values.mean(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def token_mask(inputs: dict, prefix: str = "") -> torch.Tensor | None:
    """The attention mask of a batch (`None` for images, where every patch is real)."""
    return inputs.get(f"{prefix}attention_mask")


def parse_layer_map(value: str | list[int]) -> str | list[int]:
    """`uniform`, `last`, or a list of teacher layers (from YAML, or `3,6` on the command line)."""
    if value in ("uniform", "last"):
        return value
    try:
        layers = [int(layer) for layer in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise ValueError(
            f"`layer_map` must be `uniform`, `last`, or teacher layers like `3,6` / [3, 6], got {value!r}."
        ) from None
    if not layers or min(layers) < 0:
        raise ValueError(f"`layer_map` teacher layers must be >= 0 (0 = embeddings), got {layers}.")
    return layers


@dataclass
class LayerMapOptions(LossOptions):
    """The layer pairing shared by the losses that compare layers (`attention`, `hidden_state`)."""

    layer_map: str = field(
        default="uniform",
        metadata={
            "help": "Which teacher layer each student layer learns from in the `attention` and `hidden_state` "
            "losses: `uniform` (student layer m <-> teacher layer m*L_T/L_S; 12 -> 4 gives 3, 6, 9, 12), `last`, "
            "or one 1-based teacher layer per student layer, e.g. `3,6` (a YAML list works too)."
        },
    )

    def validate(self) -> None:
        self.layer_map = parse_layer_map(self.layer_map)
