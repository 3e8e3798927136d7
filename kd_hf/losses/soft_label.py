"""Soft-label distillation (Hinton, Vinyals & Dean, 2015, https://huggingface.co/papers/1503.02531).

The student matches the teacher's temperature-softened class distribution. Besides the forward KL of the paper, the
reverse KL and the generalised Jensen-Shannon divergence of GKD (Agarwal et al., 2024,
https://huggingface.co/papers/2306.13649) are available: `JSD_beta = beta KL(p_T || m) + (1 - beta) KL(p_S || m)`
with `m = beta p_T + (1 - beta) p_S`, so beta = 0 is forward KL and beta = 1 is reverse KL. `logit_mse` matches the
logits themselves (the mean squared difference over classes), the limit of `T^2 KL` at high temperature, which Kim
et al. (2021, https://arxiv.org/abs/2105.08919) find copies the teacher's predictions more closely.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import register_loss
from .options import LossOptions


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "logit_mse")


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-example divergence between softened class distributions, scaled by `temperature**2` (`logit_mse`: between
    the logits, at any temperature).

    Args:
        student_logits (`torch.Tensor` of shape `[batch, num_classes]`): the student's logits.
        teacher_logits (`torch.Tensor` of shape `[batch, num_classes]`): the teacher's logits, same label order.
        temperature (`float`, *optional*, defaults to 1.0): softmax temperature.
        kind (`str`, *optional*, defaults to `"forward_kl"`): `forward_kl`, `reverse_kl`, `jsd` or `logit_mse`.
        beta (`float`, *optional*, defaults to 0.5): JSD interpolation; 0 is forward KL, 1 reverse KL.

    Returns:
        `torch.Tensor` of shape `[batch]`.
    """
    if kind == "logit_mse":
        return (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)
    # fp32: a bf16 teacher's log-softmax is too coarse for small KL values.
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "jsd" and beta in (0.0, 1.0):
        kind = "forward_kl" if beta == 0.0 else "reverse_kl"
    if kind == "forward_kl":
        value = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
    elif kind == "reverse_kl":
        value = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True).sum(-1)
    elif kind == "jsd":
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + math.log(1 - beta), teacher_log_probs + math.log(beta)]), dim=0
        )
        teacher_term = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
        student_term = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True).sum(-1)
        value = beta * teacher_term + (1 - beta) * student_term
    else:
        raise ValueError(f"Unknown divergence {kind!r}; use one of {DIVERGENCES}.")
    return value * temperature**2


@dataclass
class SoftLabelOptions(LossOptions):
    """Recipe fields of the soft-label loss (the temperature also softens several teachers' average)."""

    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature of the soft-label loss, > 0 (Hinton et al. use 2 to 20)."}
    )
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "Soft-label divergence: `forward_kl` KL(teacher||student), `reverse_kl` "
            "KL(student||teacher), `jsd` (generalised Jensen-Shannon with `jsd_beta`), or `logit_mse` (the mean "
            "squared difference of the logits; `temperature` does not apply).",
            "choices": list(DIVERGENCES),
        },
    )
    jsd_beta: float = field(
        default=0.5,
        metadata={"help": "Interpolation of the generalised JSD, in [0, 1]: 0 is forward KL, 1 is reverse KL."},
    )

    RANGES = {
        "temperature": ("> 0", "1 leaves logits unchanged"),
        "jsd_beta": ("[0, 1]", "0 is forward KL, 1 reverse KL"),
    }
    CARD = {"temperature": "temperature", "divergence": "soft-label divergence"}


@register_loss("soft_label", options=SoftLabelOptions)
def soft_label_loss(student_outputs, teacher_outputs, inputs, args) -> torch.Tensor:
    """Hinton KD on the classifier logits, with the divergence, temperature and beta of the recipe."""
    return divergence(
        student_outputs.logits, teacher_outputs.logits, args.temperature, kind=args.divergence, beta=args.jsd_beta
    )
