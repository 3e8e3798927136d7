import pytest
from accelerate.utils import DistributedType

from kd_hf.trainer.sharding import check_sharding


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
