"""Hidden-state matching (FitNets, Romero et al., 2015, https://huggingface.co/papers/1412.6550; TinyBERT's
`MSE(H_S W_h, H_T)`, Jiao et al., 2020, https://huggingface.co/papers/1909.10351).

Each student layer paired by `args.layer_map` (plus the embeddings with `hidden_state_embeddings: true`) is compared
with its teacher layer, token by token, by mean squared error or 1 - cosine. When the hidden sizes differ, a learned
linear map W_h takes the student's states to the teacher's width. These projections train with the student and are
saved in the Trainer's checkpoints, but they are not part of the student: the pushed folder never holds them.
"""

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import register_loss
from .attention import check_same_positions
from .layers import LayerMapOptions, layer_pairs, masked_token_mean, token_mask


logger = logging.getLogger(__name__)

HIDDEN_STATE_LOSSES = ("mse", "cosine")


@dataclass
class HiddenStateOptions(LayerMapOptions):
    """Recipe fields of the hidden-state loss."""

    hidden_state_loss: str = field(
        default="mse",
        metadata={
            "help": "`mse` or `cosine` (1 - cosine) between paired hidden states.",
            "choices": list(HIDDEN_STATE_LOSSES),
        },
    )
    hidden_state_embeddings: bool = field(
        default=False, metadata={"help": "Also match the embedding outputs (hidden_states[0]) in `hidden_state`."}
    )

    CARD = {"layer_map": "layer map (student -> teacher)", "hidden_state_loss": "hidden-state loss"}


def hidden_distance(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, kind: str = "mse"
) -> torch.Tensor:
    """Per-example distance between `[batch, tokens, hidden]` states of equal width, averaged over real tokens."""
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        per_token = (student - teacher).pow(2).mean(-1)
    elif kind == "cosine":
        per_token = 1 - F.cosine_similarity(student, teacher, dim=-1)
    else:
        raise ValueError(f"Unknown hidden-state loss {kind!r}; use 'mse' or 'cosine'.")
    return masked_token_mean(per_token, mask)


@register_loss("hidden_state", requires=("hidden_states",), options=HiddenStateOptions)
class HiddenStateLoss(nn.Module):
    """Matches the hidden states of paired layers, through learned projections when widths differ."""

    def __init__(self, args, student_config, teacher_config):
        super().__init__()
        for role, config in (("teacher", teacher_config), ("student", student_config)):
            if not hasattr(config, "num_hidden_layers") or not isinstance(getattr(config, "hidden_size", None), int):
                raise ValueError(
                    f"The {role} ({config.model_type}) has no per-token hidden states of one width (a CNN?), so the "
                    "`hidden_state` loss cannot be used; keep `soft_label` and `attribution`."
                )
        check_same_positions(student_config, teacher_config, "hidden_state")
        self.kind = args.hidden_state_loss
        self.pairs = layer_pairs(student_config.num_hidden_layers, teacher_config.num_hidden_layers, args.layer_map)
        if args.hidden_state_embeddings:
            self.pairs = [(0, 0), *self.pairs]
        student_width, teacher_width = student_config.hidden_size, teacher_config.hidden_size
        self.projections = nn.ModuleList(
            nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity()
            for _ in self.pairs
        )
        logger.info(
            "hidden_state loss (%s) on (student, teacher) layers %s%s",
            self.kind,
            self.pairs,
            f", projected {student_width} -> {teacher_width}" if student_width != teacher_width else "",
        )

    def forward(self, student_outputs, teacher_outputs, inputs, args) -> torch.Tensor:
        mask = token_mask(inputs)
        losses = [
            hidden_distance(
                projection(student_outputs.hidden_states[student_layer]),
                teacher_outputs.hidden_states[teacher_layer],
                mask,
                self.kind,
            )
            for projection, (student_layer, teacher_layer) in zip(self.projections, self.pairs)
        ]
        return torch.stack(losses).mean(0)
