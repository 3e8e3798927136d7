import math

import pytest
import torch

from kd_hf.losses import LOSS_REGISTRY, LOSS_REQUIREMENTS, register_loss
from kd_hf.losses.soft_label import divergence


def _softmax(row, temperature):
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


def test_forward_kl_matches_hand_computation():
    student, teacher = [1.0, 0.0, -1.0], [2.0, 0.5, 0.0]
    p_s, p_t = _softmax(student, 2.0), _softmax(teacher, 2.0)
    expected = 4.0 * sum(t * math.log(t / s) for t, s in zip(p_t, p_s))

    value = divergence(torch.tensor([student]), torch.tensor([teacher]), temperature=2.0)

    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_reverse_kl_swaps_the_distributions():
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    reverse = divergence(student, teacher, 3.0, kind="reverse_kl")
    assert torch.allclose(reverse, divergence(teacher, student, 3.0, kind="forward_kl"))


def test_jsd_interpolates_between_forward_and_reverse_kl():
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    assert torch.allclose(divergence(student, teacher, kind="jsd", beta=0.0), divergence(student, teacher))
    assert torch.allclose(
        divergence(student, teacher, kind="jsd", beta=1.0), divergence(student, teacher, kind="reverse_kl")
    )
    half = divergence(student, teacher, kind="jsd", beta=0.5)
    assert torch.allclose(half, divergence(teacher, student, kind="jsd", beta=0.5), atol=1e-6)
    assert (half > 0).all() and (half <= math.log(2) + 1e-6).all()  # JSD is bounded by log 2


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_divergence_is_zero_for_identical_logits_and_positive_otherwise(kind):
    logits = torch.randn(4, 5)
    assert torch.allclose(divergence(logits, logits.clone(), 2.0, kind=kind), torch.zeros(4), atol=1e-6)
    assert (divergence(logits, torch.randn(4, 5), 2.0, kind=kind) > 0).all()


def test_divergence_gradient_is_the_gap_between_the_softened_distributions():
    # d/ds [T^2 KL(p_T || p_S)] = T (p_S - p_T): the student is pulled towards the teacher, at the Hinton scale.
    # (Keeping gradients out of the teacher is the trainer's job, not the divergence's: see test_trainer.py and
    # test_intermediate_losses.py.)
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4)
    divergence(student, teacher, 2.0).sum().backward()
    expected = 2.0 * (torch.softmax(student.detach() / 2.0, -1) - torch.softmax(teacher.detach() / 2.0, -1))
    assert torch.allclose(student.grad, expected, atol=1e-6)


def test_bf16_teacher_logits_are_compared_in_fp32():
    logits = torch.randn(2, 3)
    value = divergence(logits, logits.to(torch.bfloat16), 1.0)
    assert value.dtype == torch.float32


def test_register_loss_rejects_duplicates_and_bad_names():
    assert "soft_label" in LOSS_REGISTRY
    with pytest.raises(ValueError, match="already registered"):
        register_loss("soft_label")
    with pytest.raises(ValueError, match="snake_case"):
        register_loss("Soft-Label")
    with pytest.raises(ValueError, match="unknown outputs"):
        register_loss("needs_magic", requires=("magic",))


@pytest.fixture
def registry():
    """The loss tables as they were before the test, whatever it registers or however it ends."""
    saved = [(table, dict(table)) for table in (LOSS_REGISTRY, LOSS_REQUIREMENTS)]
    yield LOSS_REGISTRY
    for table, before in saved:
        table.clear()
        table.update(before)


def test_registered_loss_is_usable_by_name(registry):
    @register_loss("logit_mse_for_test", requires=("hidden_states",))
    def logit_mse(student_outputs, teacher_outputs, inputs, args):
        return (student_outputs.logits - teacher_outputs.logits).pow(2).mean(-1)

    assert registry["logit_mse_for_test"] is logit_mse
    assert LOSS_REQUIREMENTS["logit_mse_for_test"] == {"hidden_states"}
