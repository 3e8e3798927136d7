"""Run by `torchrun --nproc_per_node 2` in tests/test_distributed.py: FSDP2 (`fully_shard`) on CPU (gloo) shards a
frozen teacher for inference, and a narrower student together with the hidden-state loss, whose projections are the
parameters a loss trains; sharded on two processes, they train as one process does on the same global batch.

accelerate selects FSDP only on GPU-like devices (on CPU the Trainer runs DDP and says so), so this drives
`fully_shard` directly with kd_hf's losses: the losses with parameters are sharded with the student by running them
inside one module's forward, where FSDP has gathered their parameters. benchmarks/gpu_check.sh runs a recipe under
accelerate's FSDP plugin on a GPU.
"""

import copy
import json
import sys
from types import SimpleNamespace

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import BertConfig, BertForSequenceClassification

from kd_hf.losses.hidden_state import HiddenStateLoss
from kd_hf.losses.soft_label import divergence


class StudentWithLosses(nn.Module):
    """The student and its losses with parameters as one module, whose forward returns the distillation loss."""

    def __init__(self, student: nn.Module, hidden_state: HiddenStateLoss):
        super().__init__()
        self.student, self.hidden_state = student, hidden_state

    def forward(self, inputs: dict, teacher_outputs) -> torch.Tensor:
        outputs = self.student(**inputs, output_hidden_states=True)
        soft_label = divergence(outputs.logits, teacher_outputs.logits, temperature=2.0)
        return (soft_label + self.hidden_state(outputs, teacher_outputs, inputs, None)).mean()


def shard(model: nn.Module, layers: nn.ModuleList, mesh) -> nn.Module:
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def teacher_forward(teacher: nn.Module, inputs: dict):
    with torch.no_grad():
        outputs = teacher(**inputs, output_hidden_states=True)
    if hasattr(teacher, "reshard"):  # FSDP2 keeps the root's parameters gathered after forward, awaiting a backward
        teacher.reshard()
    return outputs


def shard_fraction(model: nn.Module) -> float:
    """The fraction of `model`'s parameters this process holds."""
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    return local / sum(p.numel() for p in model.parameters())


def train(model: nn.Module, teacher: nn.Module, inputs: dict, steps: int = 5) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # not Adam: it would hide a wrongly scaled gradient
    losses = []
    for _ in range(steps):
        teacher_outputs = teacher_forward(teacher, inputs)
        loss = model(inputs, teacher_outputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


torch.distributed.init_process_group("gloo")
rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
mesh = init_device_mesh("cpu", (world_size,))
no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "vocab_size": 100}
teacher_config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            initializer_range=0.5, **no_dropout)  # fmt: skip
student_config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                            **no_dropout)  # fmt: skip
torch.manual_seed(0)
teacher = BertForSequenceClassification(teacher_config).eval().requires_grad_(False)
hidden_state = HiddenStateLoss(
    SimpleNamespace(hidden_state_loss="mse", layer_map="uniform", hidden_state_embeddings=False),
    student_config,
    teacher_config,
)
model = StudentWithLosses(BertForSequenceClassification(student_config), hidden_state)
# Each rank its own 4 texts; one process trains on all of them at once, from the same weights.
batches = [torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(r)) for r in range(world_size)]
inputs = {"input_ids": batches[rank], "attention_mask": torch.ones_like(batches[rank])}
everything = {"input_ids": torch.cat(batches), "attention_mask": torch.ones_like(torch.cat(batches))}
one_process_teacher, one_process_model = copy.deepcopy(teacher), copy.deepcopy(model)
with torch.no_grad():
    expected_logits = teacher(**inputs).logits
projection_before = model.hidden_state.projections[0].weight.detach().clone()

shard(teacher, teacher.bert.encoder.layer, mesh)
shard(model, model.student.bert.encoder.layer, mesh)
teacher_logits = teacher_forward(teacher, inputs).logits
sharded_losses = train(model, teacher, inputs)
train(one_process_model, one_process_teacher, everything)

full = {name: parameter.full_tensor() for name, parameter in model.named_parameters()}
reference = dict(one_process_model.named_parameters())
report = {
    "world_size": world_size,
    "teacher_shard_fraction": shard_fraction(teacher),
    "student_shard_fraction": shard_fraction(model),
    "teacher_max_abs_logit_difference": (teacher_logits - expected_logits).abs().max().item(),
    "losses": sharded_losses,
    "projection_change": (full["hidden_state.projections.0.weight"] - projection_before).abs().max().item(),
    "max_abs_difference_from_one_process": max((full[name] - reference[name]).abs().max().item() for name in full),
}
with open(f"{sys.argv[1]}/fsdp_rank{rank}.json", "w") as file:
    json.dump(report, file)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
