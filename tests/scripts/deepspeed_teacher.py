"""Run by `torchrun --nproc_per_node 2` with `DS_ACCELERATOR=cpu` in tests/test_distributed.py: `prepare_deepspeed`
shards a teacher with ZeRO-3 on CPU (gloo), and a ZeRO-3 student learns from it with the soft-label loss.

This drives the engines directly, to check the teacher's placement and its outputs against the unsharded teacher;
the Trainer's own DeepSpeed path runs in tests/scripts/ddp_distill.py (accelerate's GPU-only gate lifted), and
benchmarks/gpu_check.sh runs the whole recipe under ZeRO-3 on a GPU.
"""

import json
import sys
from types import SimpleNamespace

import deepspeed
import torch
from transformers import BertConfig, BertForSequenceClassification

from kd_hf.losses.soft_label import divergence
from kd_hf.trainer import prepare_deepspeed


deepspeed.init_distributed(dist_backend="gloo")
rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
zero3 = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
         "train_batch_size": 4 * world_size}  # fmt: skip
torch.manual_seed(0)
# Larger weights than the student's, so that the teacher's soft labels are far from uniform and there is something
# to learn.
teacher = BertForSequenceClassification(BertConfig(**config.to_dict() | {"initializer_range": 0.5}))
teacher.eval().requires_grad_(False)
inputs = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(rank))  # each rank its own batch
with torch.no_grad():
    expected = teacher(input_ids=inputs).logits
# What `DistillationTrainer` reads from its accelerator: the DeepSpeed config the student was prepared with.
accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=zero3)))
engine = prepare_deepspeed(teacher, accelerator)
shards = [parameter.ds_tensor.numel() for parameter in engine.module.parameters()]
full = [parameter.ds_numel for parameter in engine.module.parameters()]
with torch.no_grad():
    logits = engine(input_ids=inputs).logits

torch.manual_seed(1)
student = BertForSequenceClassification(config)
optimizer = {"optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}}
student_engine, *_ = deepspeed.initialize(
    model=student, config=zero3 | optimizer, model_parameters=student.parameters()
)
losses = []
for _ in range(5):
    with torch.no_grad():
        teacher_logits = engine(input_ids=inputs).logits
    loss = divergence(student_engine(input_ids=inputs).logits, teacher_logits, temperature=2.0).mean()
    student_engine.backward(loss)
    student_engine.step()
    losses.append(loss.item())

report = {
    "world_size": world_size,
    "teacher_in_eval_mode": not engine.module.training,
    "teacher_max_abs_logit_difference": (logits - expected).abs().max().item(),
    "teacher_shard_fraction": sum(shards) / sum(full),
    "student_losses": losses,
}
with open(f"{sys.argv[1]}/deepspeed_rank{rank}.json", "w") as file:
    json.dump(report, file)
# Shut the process group down before the interpreter does: gloo's threads torn down at exit abort the process
# ("terminate called without an active exception") now and then.
torch.distributed.barrier()
torch.distributed.destroy_process_group()
