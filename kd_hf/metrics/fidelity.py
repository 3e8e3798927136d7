"""How closely a student follows its teacher (Stanton et al., 2021, https://huggingface.co/papers/2106.05945)."""

import torch
import torch.nn.functional as F


def top1_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per example, 1.0 where the student's top class is the teacher's, else 0.0 (shape `[batch]`)."""
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float()


def predictive_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per example KL(p_teacher || p_student) at temperature 1 (shape `[batch]`)."""
    student_log_probs = F.log_softmax(student_logits.float(), dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float(), dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
