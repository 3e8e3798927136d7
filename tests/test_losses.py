import dataclasses
import math
from dataclasses import dataclass, field

import pytest
import torch

from kd_hf import DistillationConfig
from kd_hf.card import recipe_fields
from kd_hf.losses import LOSS_OPTIONS, LOSS_REGISTRY, LOSS_REQUIREMENTS, LossOptions, option_classes, register_loss
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


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "logit_mse"])
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


def test_logit_mse_is_the_mean_squared_logit_gap_whatever_the_temperature():
    student, teacher = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.5]])
    for temperature in (1.0, 4.0):
        value = divergence(student, teacher, temperature, kind="logit_mse")
        torch.testing.assert_close(value, torch.tensor([(1.0 + 9.0 + 0.0) / 3]))
    # Softmax ignores a shift of every logit; the logit gap does not.
    assert divergence(student + 1.0, student, kind="logit_mse").item() == pytest.approx(1.0)


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
    with pytest.raises(ValueError, match="must be a `LossOptions` dataclass"):
        register_loss("loose_options", options=dict)
    assert "needs_magic" not in LOSS_REGISTRY and "loose_options" not in LOSS_REGISTRY


@pytest.fixture
def registry():
    """The loss tables as they were before the test, whatever it registers or however it ends."""
    saved = [(table, dict(table)) for table in (LOSS_REGISTRY, LOSS_REQUIREMENTS, LOSS_OPTIONS)]
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


def test_recorded_outputs_are_known_requirements(registry):
    register_loss("relations_for_test", requires=("qkv",))(lambda *args: None)
    assert LOSS_REQUIREMENTS["relations_for_test"] == {"qkv"}


@pytest.mark.parametrize("options", option_classes(), ids=lambda options: options.__name__)
def test_shipped_loss_options_are_recipe_fields_with_help_and_checks(options, tmp_path):
    names = {option.name for option in dataclasses.fields(options)}
    assert names and all(option.metadata.get("help") for option in dataclasses.fields(options))
    assert all(option.default is not dataclasses.MISSING for option in dataclasses.fields(options))
    assert set(options.RANGES) <= names and set(options.CARD) <= names
    config = DistillationConfig(output_dir=str(tmp_path), model_name_or_path="m")
    assert isinstance(config, options) and names <= {option.name for option in dataclasses.fields(config)}


def test_card_lists_the_options_of_the_losses_in_use_in_their_order():
    fields = list(recipe_fields(["soft_label", "hidden_state", "attribution"]))
    assert fields.index("alpha") < fields.index("temperature") < fields.index("hidden_state_loss")
    assert fields.index("hidden_state_loss") < fields.index("attribution_method") < fields.index("teacher_cache")
    assert "attention_heads" not in fields and "jsd_beta" not in fields


@dataclass
class MarginOptions(LossOptions):
    margin: float = field(default=1.0, metadata={"help": "Logit margin (> 0)."})

    RANGES = {"margin": ("> 0", "the smallest gap that costs nothing")}
    CARD = {"margin": "logit margin"}

    def validate(self):
        if self.margin > 10:
            raise ValueError("`margin` above 10 never costs anything; lower it.")


def test_a_loss_registered_later_brings_its_options_through_a_config_subclass(registry, tmp_path):
    @register_loss("margin_for_test", options=MarginOptions)
    def margin(student_outputs, teacher_outputs, inputs, args):
        return (teacher_outputs.logits - student_outputs.logits).clamp_min(-args.margin).sum(-1)

    base = {"output_dir": str(tmp_path), "model_name_or_path": "m", "loss_type": ["soft_label", "margin_for_test"]}
    with pytest.raises(ValueError, match=r"MarginOptions.*class MyConfig\(MarginOptions, DistillationConfig\)"):
        DistillationConfig(**base)

    @dataclass
    class MyConfig(MarginOptions, DistillationConfig):
        pass

    config = MyConfig(**base, margin=2.0)
    assert config.margin == 2.0 and config.temperature == 2.0
    with pytest.raises(ValueError, match=r"`margin` must be > 0, got 0.0; the smallest gap"):
        MyConfig(**base, margin=0.0)
    with pytest.raises(ValueError, match="above 10"):
        MyConfig(**base, margin=11.0)
    assert recipe_fields(config.loss_type)["margin"] == "logit margin"
