"""Attention matching: the student learns where the teacher looks.

- MiniLM (Wang et al., 2020, https://huggingface.co/papers/2002.10957): KL(A_T || A_S) between attention distributions,
  per head and query position, averaged over heads and real tokens. The default (`attention_loss: kl`).
- TinyBERT (Jiao et al., 2020, https://huggingface.co/papers/1909.10351): mean squared error between attention maps
  (`attention_loss: mse`; on probabilities, which is what eager attention returns).
- MiniLMv2 (Wang et al., 2021, https://huggingface.co/papers/2012.15828): when head counts differ, the queries,
  keys and values of a layer are each split into the same number of *relation heads* on both sides and their
  self-relations softmax(Q Q^T / sqrt(d)) are matched instead (`attention_heads: relation`). Otherwise heads are
  averaged per layer (`attention_heads: average`).

Padding is masked out of rows (queries) and columns (keys), so extra padding never changes the loss.
"""

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import OUTPUT_RECORDERS, register_loss
from .layers import LayerMapOptions, layer_pairs, masked_token_mean, token_mask


logger = logging.getLogger(__name__)

_EPS = 1e-12
_PROJECTION = re.compile(r"\.layers?\.(\d+)\..*\b(query|key|value|q_proj|k_proj|v_proj)$")
_PROJECTION_KIND = {"query": "q", "q_proj": "q", "key": "k", "k_proj": "k", "value": "v", "v_proj": "v"}

ATTENTION_LOSSES = ("kl", "mse")
ATTENTION_HEADS = ("auto", "per_head", "average", "relation")


@dataclass
class AttentionOptions(LayerMapOptions):
    """Recipe fields of the attention loss."""

    attention_loss: str = field(
        default="kl",
        metadata={
            "help": "`kl`: KL(teacher || student) per head and query (MiniLM); `mse`: squared error (TinyBERT).",
            "choices": list(ATTENTION_LOSSES),
        },
    )
    attention_heads: str = field(
        default="auto",
        metadata={
            "help": "How heads are compared: `per_head` (counts must match), `average` (heads averaged per "
            "layer), `relation` (MiniLMv2 query/key/value relations, any head counts, no eager attention "
            "needed), or `auto` (per_head when counts match, else average).",
            "choices": list(ATTENTION_HEADS),
        },
    )
    attention_relation_heads: int = field(
        default=0,
        metadata={
            "help": "Relation heads for `attention_heads: relation`, dividing both hidden sizes; 0 picks the "
            "gcd of the two head counts.",
        },
    )

    RANGES = {"attention_relation_heads": (">= 0", "0 = automatic")}
    CARD = {
        "layer_map": "layer map (student -> teacher)",
        "attention_loss": "attention loss",
        "attention_heads": "attention heads",
    }


def attention_distance(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, kind: str = "kl"
) -> torch.Tensor:
    """Per-example distance between attention maps `[batch, heads, queries, keys]`, averaged over heads and real
    query positions; `mask` (`[batch, tokens]`, 1 = real) removes padded keys and queries."""
    student, teacher = student.float(), teacher.float()
    if kind == "kl":
        # xlogy: 0 * log 0 = 0 where the teacher gives a (padded) key no attention.
        per_key = torch.xlogy(teacher, teacher) - teacher * student.clamp_min(_EPS).log()
    elif kind == "mse":
        per_key = (student - teacher).pow(2)
    else:
        raise ValueError(f"Unknown attention loss {kind!r}; use 'kl' (MiniLM) or 'mse' (TinyBERT).")
    if mask is not None:
        per_key = per_key * mask[:, None, None, :].to(per_key.dtype)
    per_query = per_key.sum(-1).mean(1)  # [batch, queries]
    return masked_token_mean(per_query, mask)


def self_relation(states: torch.Tensor, num_heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """MiniLMv2 self-relation softmax(X_r X_r^T / sqrt(d_r)) of `[batch, tokens, hidden]` states split into
    `num_heads` relation heads: `[batch, num_heads, tokens, tokens]`, padded keys given no weight."""
    batch, tokens, hidden = states.shape
    heads = states.float().view(batch, tokens, num_heads, hidden // num_heads).transpose(1, 2)
    scores = heads @ heads.transpose(-1, -2) / math.sqrt(hidden // num_heads)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


def _attention_heads(config) -> int | None:
    return getattr(config, "num_attention_heads", None)


@register_loss("attention", requires=("attentions",), options=AttentionOptions)
class AttentionLoss(nn.Module):
    """Matches attention maps (or MiniLMv2 relations) of the layers paired by `args.layer_map`."""

    def __init__(self, args, student_config, teacher_config):
        super().__init__()
        for role, config in (("teacher", teacher_config), ("student", student_config)):
            if _attention_heads(config) is None or not hasattr(config, "num_hidden_layers"):
                raise ValueError(
                    f"The {role} ({config.model_type}) has no self-attention, so the `attention` loss cannot be "
                    "used; keep `soft_label` (and `attribution`), which work for any architecture."
                )
        check_same_positions(student_config, teacher_config, "attention")
        self.kind = args.attention_loss
        self.pairs = layer_pairs(student_config.num_hidden_layers, teacher_config.num_hidden_layers, args.layer_map)
        if any(teacher == 0 for _, teacher in self.pairs):
            raise ValueError("Layer 0 is the embeddings, which have no attention; map student layers to 1..L.")
        heads = args.attention_heads
        if heads == "auto":
            same = _attention_heads(student_config) == _attention_heads(teacher_config)
            heads = "per_head" if same else "average"
        if heads == "per_head" and _attention_heads(student_config) != _attention_heads(teacher_config):
            raise ValueError(
                f"The student has {_attention_heads(student_config)} heads and the teacher "
                f"{_attention_heads(teacher_config)}; set `attention_heads` to `average` or `relation`."
            )
        self.heads = heads
        if heads == "relation":
            self.relation_heads = args.attention_relation_heads or math.gcd(
                _attention_heads(student_config), _attention_heads(teacher_config)
            )
            for role, config in (("student", student_config), ("teacher", teacher_config)):
                if config.hidden_size % self.relation_heads:
                    raise ValueError(
                        f"The {role}'s hidden size {config.hidden_size} does not split into "
                        f"{self.relation_heads} relation heads; set `attention_relation_heads` to a divisor of both "
                        "hidden sizes."
                    )
        self.requires = ("qkv",) if heads == "relation" else ("attentions",)
        logger.info("attention loss (%s, %s heads) on (student, teacher) layers %s", self.kind, heads, self.pairs)

    def forward(self, student_outputs, teacher_outputs, inputs, args) -> torch.Tensor:
        mask = token_mask(inputs)
        losses = []
        for student_layer, teacher_layer in self.pairs:
            if self.heads == "relation":
                for part in "qkv":
                    student_rel = self_relation(
                        student_outputs.qkv[student_layer - 1][part], self.relation_heads, mask
                    )
                    teacher_rel = self_relation(
                        teacher_outputs.qkv[teacher_layer - 1][part], self.relation_heads, mask
                    )
                    losses.append(attention_distance(student_rel, teacher_rel, mask, self.kind))
                continue
            student_map = student_outputs.attentions[student_layer - 1]
            teacher_map = teacher_outputs.attentions[teacher_layer - 1]
            if self.heads == "average":
                student_map, teacher_map = student_map.mean(1, keepdim=True), teacher_map.mean(1, keepdim=True)
            losses.append(attention_distance(student_map, teacher_map, mask, self.kind))
        return torch.stack(losses).mean(0)


def check_same_positions(student_config, teacher_config, loss: str) -> None:
    """Intermediate losses compare position by position: vision models must cut images into the same patch grid."""
    grids = []
    for config in (student_config, teacher_config):
        if hasattr(config, "image_size") and hasattr(config, "patch_size"):
            size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
            grids.append(size // config.patch_size)
    if len(grids) == 2 and grids[0] != grids[1]:
        raise ValueError(
            f"The student sees a {grids[0]}x{grids[0]} patch grid and the teacher a {grids[1]}x{grids[1]} one, so "
            f"the `{loss}` loss has no positions to compare; match `image_size`/`patch_size`, or use `soft_label` "
            "and `attribution`, which compare outputs and pixel maps."
        )


def qkv_module_names(model: nn.Module) -> dict[str, tuple[int, str]]:
    """Module name -> (0-based layer, 'q' | 'k' | 'v') for the query/key/value projections of every block."""
    found = {}
    for name, _ in model.named_modules():
        match = _PROJECTION.search(name)
        if match:
            found[name] = (int(match.group(1)), _PROJECTION_KIND[match.group(2)])
    return found


class QKVRecorder:
    """Keeps the query/key/value projections of every block from the last forward pass (MiniLMv2 relations), so that
    attention can be matched without eager attention weights. The trainer builds one per model for a loss that
    requires `qkv`, and sets `outputs.qkv = recorder.pop()` after each forward pass."""

    def __init__(self, model: nn.Module):
        self.outputs: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        names = qkv_module_names(model)
        if not names:
            raise ValueError(
                f"{type(model).__name__} has no query/key/value projections to take relations from; use "
                "`attention_heads: average`."
            )
        for name, module in model.named_modules():
            if name in names:
                layer, part = names[name]
                module.register_forward_hook(self._hook(layer, part))

    def _hook(self, layer: int, part: str):
        def hook(module, args, output):
            self.outputs[layer][part] = output

        return hook

    def pop(self) -> list[dict[str, torch.Tensor]]:
        layers = [self.outputs[layer] for layer in sorted(self.outputs)]
        self.outputs = defaultdict(dict)
        return layers


OUTPUT_RECORDERS["qkv"] = QKVRecorder
