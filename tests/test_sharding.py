import pytest
import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from kd_hf import DistillationTrainer
from kd_hf.trainer.sharding import check_sharding, warn_if_fsdp_fell_back, wrap_layers_only


NEEDS = {"soft_label": frozenset(), "attribution": frozenset({"attributions"})}


@pytest.mark.parametrize("distributed", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_attribution_loss_is_refused_under_zero_and_fsdp_with_ddp_named(distributed):
    with pytest.raises(NotImplementedError, match=r"\['attribution'\].*twice.*multi_gpu.yaml"):
        check_sharding(distributed, NEEDS, trainable_losses=[])


def test_trainable_losses_are_refused_under_fsdp1_with_fsdp2_deepspeed_and_ddp_named():
    with pytest.raises(NotImplementedError, match=r"\['hidden_state'\].*FSDP1.*FSDP2.*fsdp.yaml.*DeepSpeed.*DDP"):
        check_sharding(DistributedType.FSDP, {"hidden_state": frozenset({"hidden_states"})}, ["hidden_state"], 1)


@pytest.mark.parametrize("distributed", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_trainable_losses_run_under_deepspeed_and_fsdp2(distributed):
    check_sharding(distributed, {"hidden_state": frozenset({"hidden_states"})}, ["hidden_state"], 2)


@pytest.mark.parametrize("image", [False, True])
def test_fsdp2_wraps_the_layers_on_their_own_and_leaves_the_embeddings_to_the_root(image, make_bert, make_vit):
    """accelerate's default (`_no_split_modules`) would shard `BertEmbeddings` / `ViTEmbeddings`, then the input
    embeddings inside them a second time, which `fully_shard` refuses."""
    model = make_vit() if image else make_bert(layers=2)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")

    wrap_layers_only(plugin, model)

    assert plugin.transformer_cls_names_to_wrap == ["ViTLayer" if image else "BertLayer"]
    plugin.set_auto_wrap_policy(model)  # what accelerate does next, with the names set
    wrapped = {type(module).__name__ for module in model.modules() if plugin.auto_wrap_policy(module, False, 0)}
    assert wrapped == {"ViTLayer" if image else "BertLayer"}


def test_a_recipes_own_layer_classes_are_kept(make_bert):
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, transformer_cls_names_to_wrap=["BertEncoder"])
    wrap_layers_only(plugin, make_bert(layers=2))
    assert plugin.transformer_cls_names_to_wrap == ["BertEncoder"]


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


def test_a_sharded_teacher_with_the_teacher_cache_is_refused_naming_both(make_bert, distill_args):
    args = distill_args(shard_teacher=True, teacher_cache=True)
    with pytest.raises(ValueError, match=r"`shard_teacher` cannot run with `teacher_cache`.*Leave out"):
        DistillationTrainer(model=make_bert(seed=2), teacher_model=make_bert(seed=1), args=args)


def test_shard_teacher_outside_fsdp2_keeps_the_whole_teacher_and_says_so(make_bert, distill_args, caplog):
    teacher = make_bert(seed=1)
    with caplog.at_level("WARNING", logger="kd_hf.trainer"):
        trainer = DistillationTrainer(
            model=make_bert(seed=2), teacher_model=teacher, args=distill_args(shard_teacher=True)
        )
    assert "shards the teacher under FSDP2 only; this run is NO" in caplog.text
    assert trainer.teacher is teacher and all(type(p) is torch.nn.Parameter for p in teacher.parameters())
