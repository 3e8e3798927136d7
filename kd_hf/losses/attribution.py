"""Attribution matching: the student learns to explain its prediction as the teacher explains the teacher's.

Both models attribute the teacher's top-1 class to their inputs (token embeddings for text, pixels for images; see
`kd_hf.explain.gradients`); the student's attribution is built with `create_graph=True` so that the loss trains it.
Forms (`attribution_loss`):

- `cosine`: `1 - cos(a_S, a_T)` over the real tokens or pixels (e2KD, Parchami-Araghi et al., 2024,
  https://huggingface.co/papers/2402.03119);
- `l1` / `l2`: the distance between the two attributions after each is L2-normalised per example (AD-KD, Wu et al.,
  2023, https://huggingface.co/papers/2305.10010).

The teacher's side comes live, or from a cache computed once over the training set (`kd_hf.teacher_cache`).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..explain.gradients import ATTRIBUTION_METHODS
from . import register_loss
from .options import LossOptions


ATTRIBUTION_LOSSES = ("cosine", "l1", "l2")


@dataclass
class AttributionOptions(LossOptions):
    """Recipe fields of the attribution loss: its form, the attribution both models compute, and its cost."""

    attribution_loss: str = field(
        default="cosine",
        metadata={
            "help": "Form of the `attribution` loss: `cosine` (1 - cos, e2KD) or `l1` / `l2` between per-example "
            "L2-normalised attributions (AD-KD).",
            "choices": list(ATTRIBUTION_LOSSES),
        },
    )
    attribution_method: str = field(
        default="input_x_gradient",
        metadata={
            "help": "Attribution both models compute for the teacher's top-1 class: `input_x_gradient`, `gradient` "
            "or `integrated_gradients` (few-step, `attribution_n_steps`; the method the reports judge by), at the "
            "token embeddings (text) or the pixels (images).",
            "choices": list(ATTRIBUTION_METHODS),
        },
    )
    attribution_n_steps: int = field(
        default=8,
        metadata={
            "help": "Gauss-Legendre points of `attribution_method: integrated_gradients` (>= 1); each costs a forward "
            "and a double backward of the batch.",
        },
    )
    attribution_every: int = field(
        default=1,
        metadata={"help": "Apply the `attribution` loss every N optimizer steps (>= 1); it costs a double backward."},
    )
    attribution_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples of each training batch (per device) whose attributions are matched: the first N of the "
            "shuffled batch, so that every example takes part over the run (default: all). The double backward, and "
            "the interpolation points of `integrated_gradients`, then run on N examples; the loss is scaled to "
            "estimate the whole batch's.",
        },
    )

    RANGES = {
        "attribution_n_steps": (">= 1", None),
        "attribution_every": (">= 1", "1 = every step"),
        "attribution_batch_size": (">= 1", "or unset for the whole batch"),
    }
    CARD = {
        "attribution_loss": "attribution loss",
        "attribution_method": "attribution matched",
        "attribution_n_steps": "integration steps of the matched attribution",
        "attribution_every": "attribution loss every N steps",
        "attribution_batch_size": "examples per batch whose attributions are matched",
    }


def attribution_distance(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "cosine"
) -> torch.Tensor:
    """Per-example distance between attributions `[batch, ...]` (tokens, or pixels), padding masked out."""
    student, teacher = student.flatten(1).float(), teacher.flatten(1).float()
    if mask is not None:
        mask = mask.flatten(1).to(student.dtype)
        student, teacher = student * mask, teacher * mask
    if kind == "cosine":
        return 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-12)
    if kind in ("l1", "l2"):
        difference = F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)
        return difference.abs().sum(-1) if kind == "l1" else difference.pow(2).sum(-1)
    raise ValueError(f"Unknown attribution loss {kind!r}; use one of {list(ATTRIBUTION_LOSSES)}.")


def to_words(scores: torch.Tensor, word_index: torch.Tensor, num_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token scores `[batch, tokens]` summed into `num_words` words by `word_index` (-1 = no word), and which words
    got any token."""
    real = word_index >= 0
    index = word_index.clamp_min(0)
    words = scores.new_zeros(scores.shape[0], num_words).scatter_add(1, index, scores * real)
    present = scores.new_zeros(scores.shape[0], num_words).scatter_add(1, index, real.to(scores.dtype)) > 0
    return words, present


@register_loss("attribution", requires=("attributions",), options=AttributionOptions)
def attribution_loss(student_outputs, teacher_outputs, inputs, args) -> torch.Tensor:
    """Distance between the student's and the teacher's attributions of the teacher's top-1 class: token by token
    with one tokenizer, word by word (`word_index`, see `kd_hf.data.tokenize_for_pair`) with two."""
    student, teacher = student_outputs.attributions, teacher_outputs.attributions
    if "teacher_word_index" not in inputs:
        return attribution_distance(student, teacher, inputs.get("attention_mask"), args.attribution_loss)
    student_index, teacher_index = inputs["word_index"], inputs["teacher_word_index"]
    num_words = int(max(student_index.max(), teacher_index.max())) + 1
    student_words, student_present = to_words(student.float(), student_index, num_words)
    teacher_words, teacher_present = to_words(teacher.float(), teacher_index, num_words)
    return attribution_distance(student_words, teacher_words, student_present & teacher_present, args.attribution_loss)
