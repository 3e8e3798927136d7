"""The last layer of a [CLS] classifier computed for its first token alone: exact, and cheaper to explain.

A BERT-style text classifier (its pooler or head takes [CLS]) and a ViT image classifier read the first token of
the last layer's output and nothing else. In that layer only the keys and values need every token: the queries, the
attention output, the residuals and the feed-forward can run for the first token alone, and the logits are the same.
An explanation runs the model forward and backward on every interpolated or occluded input, so this saves what the
last layer spends on the other tokens: 14% of the arithmetic of a 6-layer MiniLM, 19% of a 4-layer ViT.

Every explainer's forward function (`AttributionInputs.forward`) runs under `first_token_last_layer(model)`. It
applies to the model classes of `FIRST_TOKEN_HEADS` with the attention functions of `ALL_ATTENTION_FUNCTIONS` (sdpa,
flash, ...); elsewhere it changes nothing. The first time a layer is shortened, its output is compared with the full
layer's first token, and a layer that differs (a model whose code has changed) is left whole, with a warning.
`KD_HF_FIRST_TOKEN_LAYER=0` turns it off.
"""

import contextlib
import logging
import os
import threading
import weakref

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


logger = logging.getLogger(__name__)

SWITCH = "KD_HF_FIRST_TOKEN_LAYER"
# Classifiers whose logits read the first token of the last layer and nothing else ([CLS], RoBERTa's <s>).
FIRST_TOKEN_HEADS = frozenset({
    "BertForSequenceClassification", "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification", "ElectraForSequenceClassification",
    "ViTForImageClassification", "DeiTForImageClassification",
})  # fmt: skip


def _attend(attention, query, key, value, attention_mask, head_size: int) -> torch.Tensor:
    """`attention`'s own attention function for the first token's query against every key: `[batch, 1, hidden]`."""
    batch = query.shape[0]

    def heads(states):
        return states.view(batch, states.shape[1], -1, head_size).transpose(1, 2)

    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]  # the first query's row
    function = ALL_ATTENTION_FUNCTIONS[attention.config._attn_implementation]
    context, _ = function(
        attention, heads(query), heads(key), heads(value), attention_mask, dropout=0.0, scaling=attention.scaling
    )
    return context.reshape(batch, 1, -1)


def _post_norm_layer(layer, hidden_states, attention_mask):
    """BERT, RoBERTa, ELECTRA: attention, then residual and layer norm, then the feed-forward."""
    attention, first = layer.attention.self, hidden_states[:, :1]
    context = _attend(
        attention, attention.query(first), attention.key(hidden_states), attention.value(hidden_states),
        attention_mask, attention.attention_head_size,
    )  # fmt: skip
    return layer.feed_forward_chunk(layer.attention.output(context, first))


def _pre_norm_layer(layer, hidden_states, attention_mask):
    """ViT, DeiT: layer norm, attention and residual; layer norm, MLP and residual."""
    attention, normed = layer.attention, layer.layernorm_before(hidden_states)
    context = _attend(
        attention, attention.q_proj(normed[:, :1]), attention.k_proj(normed), attention.v_proj(normed),
        attention_mask, attention.head_dim,
    )  # fmt: skip
    hidden = layer.dropout(attention.o_proj(context)) + hidden_states[:, :1]
    return layer.dropout(layer.mlp(layer.layernorm_after(hidden))) + hidden


LAYERS = {
    "BertLayer": _post_norm_layer, "RobertaLayer": _post_norm_layer, "XLMRobertaLayer": _post_norm_layer,
    "CamembertLayer": _post_norm_layer, "ElectraLayer": _post_norm_layer,
    "ViTLayer": _pre_norm_layer, "DeiTLayer": _pre_norm_layer,
}  # fmt: skip

_local = threading.local()  # .layers: the layers this thread runs for the first token
_lock = threading.Lock()
_entered = weakref.WeakKeyDictionary()  # layer -> how many contexts (of any thread) have it shortened
_matches = weakref.WeakKeyDictionary()  # layer -> whether its shortcut matched the full layer on first use


def _last_layer(model):
    """The last layer of `model` if its head reads the first token only and the layer's code is known, else
    `None`."""
    if type(model).__name__ not in FIRST_TOKEN_HEADS:
        return None
    if ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, None) is None:
        return None  # eager attention: its weights may be asked for (`output_attentions`)
    layers = [module for module in model.modules() if type(module).__name__ in LAYERS]
    return layers[-1] if layers else None


class _FirstTokenForward:
    """The last layer's `forward` while shortened: the first token alone for the threads that asked, the full
    layer for every other call."""

    def __init__(self, layer):
        self.layer, self.shortcut = layer, LAYERS[type(layer).__name__]
        self.full = type(layer).forward.__get__(layer)

    def __call__(self, hidden_states, attention_mask=None, *args, **kwargs):
        cross_attention = (args and args[0] is not None) or kwargs.get("encoder_hidden_states") is not None
        if self.layer not in getattr(_local, "layers", ()) or cross_attention or _matches.get(self.layer) is False:
            return self.full(hidden_states, attention_mask, *args, **kwargs)
        first = self.shortcut(self.layer, hidden_states, attention_mask)
        if self.layer not in _matches:
            full = self.full(hidden_states, attention_mask, *args, **kwargs)
            matches = isinstance(full, torch.Tensor) and torch.allclose(first, full[:, :1], rtol=1e-4, atol=1e-5)
            _matches[self.layer] = matches
            if not matches:
                logger.warning(
                    "%s's last layer computed for its first token alone differs from the full layer; it is left "
                    "whole (its code may have changed since kd_hf was written).",
                    type(self.layer).__name__,
                )
                return full
        return first


@contextlib.contextmanager
def first_token_last_layer(model):
    """Within this context (this thread only), `model`'s last layer runs for its first token alone, where its head
    reads nothing else (see the module's docstring); otherwise nothing changes."""
    layer = None if os.environ.get(SWITCH, "").strip() == "0" else _last_layer(model)
    active = getattr(_local, "layers", frozenset())
    if layer is None or layer in active:
        yield
        return
    with _lock:
        if _entered.get(layer, 0) == 0:
            layer.forward = _FirstTokenForward(layer)
        _entered[layer] = _entered.get(layer, 0) + 1
    _local.layers = active | {layer}
    try:
        yield
    finally:
        _local.layers = active
        with _lock:
            _entered[layer] -= 1
            if _entered[layer] == 0:
                del layer.forward, _entered[layer]
