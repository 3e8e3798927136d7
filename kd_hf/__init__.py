"""kd_hf: distil Hugging Face classifiers into small students that predict and explain like their teachers."""

from .config import DistillationConfig
from .hub import load_student, push_student
from .losses import LOSS_REGISTRY, register_loss
from .trainer import DistillationTrainer


__version__ = "0.1.0"
__all__ = [
    "LOSS_REGISTRY",
    "DistillationConfig",
    "DistillationTrainer",
    "load_student",
    "push_student",
    "register_loss",
]
