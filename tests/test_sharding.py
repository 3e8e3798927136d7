import pytest
from accelerate.utils import DistributedType

from kd_hf.trainer.sharding import check_sharding, warn_if_fsdp_fell_back


NEEDS = {"soft_label": frozenset(), "attribution": frozenset({"attributions"})}


@pytest.mark.parametrize("distributed", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_attribution_loss_is_refused_under_zero_and_fsdp_with_ddp_named(distributed):
    with pytest.raises(NotImplementedError, match=r"\['attribution'\].*twice.*multi_gpu.yaml"):
        check_sharding(distributed, NEEDS, trainable_losses=[])


@pytest.mark.parametrize("distributed", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_trainable_losses_are_refused_under_zero_and_fsdp(distributed):
    with pytest.raises(NotImplementedError, match=r"\['hidden_state'\].*DDP"):
        check_sharding(distributed, {"hidden_state": frozenset({"hidden_states"})}, trainable_losses=["hidden_state"])


@pytest.mark.parametrize("distributed", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_every_loss_runs_without_sharding(distributed):
    check_sharding(distributed, NEEDS, trainable_losses=["attribution"])


def test_logit_losses_run_under_zero_and_fsdp():
    for distributed in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        check_sharding(distributed, {"soft_label": frozenset()}, trainable_losses=[])


@pytest.mark.parametrize("from_recipe", [True, False])
def test_fsdp_asked_for_on_cpu_is_said_to_run_as_ddp(from_recipe, monkeypatch, caplog):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false" if from_recipe else "true")  # an accelerate FSDP config
    with caplog.at_level("WARNING", logger="kd_hf.trainer.sharding"):
        warn_if_fsdp_fell_back(from_recipe, DistributedType.MULTI_CPU)
    assert "only on GPUs: this run is MULTI_CPU" in caplog.text


def test_fsdp_that_runs_or_was_never_asked_for_is_not_warned_about(monkeypatch, caplog):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with caplog.at_level("WARNING", logger="kd_hf.trainer.sharding"):
        warn_if_fsdp_fell_back(True, DistributedType.FSDP)
        warn_if_fsdp_fell_back(False, DistributedType.MULTI_CPU)
    assert not caplog.text
