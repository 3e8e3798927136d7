"""Faster fp32 products for explanations on CPUs where oneDNN beats the BLAS that PyTorch calls.

An explanation by integrated gradients is mostly matrix products, forward and backward to the inputs. PyTorch computes
fp32 products with MKL, which runs its AVX2 code on AMD CPUs, while the oneDNN that PyTorch also ships runs AVX-512
there: on this project's AMD EPYC machines, 250 against 115 GFLOP/s, in fp32 and to the same precision. Under
`onednn_linears()`:

- `linear` calls run through oneDNN (`torch.ops.mkldnn._linear_pointwise`, the op Inductor uses on CPU) with weights
  packed once while they live unchanged, and a backward that gives the gradient of the inputs only, which is all an
  explanation differentiates for. So does a ViT's patch embedding (a convolution whose stride is its kernel).
- Attention over up to `SHORT_ATTENTION_KEYS` keys runs as two batched products and a softmax, which PyTorch sends
  to oneDNN while `torch.backends.mkldnn.matmul.fp32_precision` is "bf16" (set for the duration). That setting allows
  bf16 arithmetic, so it is only used where `onednn_batched_products` has found that this CPU's oneDNN computes in
  fp32 all the same (CPUs without AMX) and is faster than PyTorch's CPU flash attention's products.

Both are chosen by measurement, once per process (`onednn_is_faster`, `onednn_batched_products`): where MKL is as
fast (as expected on Intel CPUs), nothing changes. `KD_HF_ONEDNN_LINEAR=0` turns it off, `=1` on.
"""

import contextlib
import functools
import logging
import os
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary


logger = logging.getLogger(__name__)

SWITCH = "KD_HF_ONEDNN_LINEAR"
# oneDNN must be this much faster on a product of an explanation's shape to be used.
MIN_SPEEDUP = 1.3
# The rows per product that packed weights are laid out for (an explanation's: steps x tokens).
PACKED_FOR_ROWS = 1024
# Up to this many keys, attention runs as two batched products and a softmax (through oneDNN, where
# `onednn_batched_products` holds) rather than as PyTorch's CPU flash attention, whose fp32 products are MKL's.
SHORT_ATTENTION_KEYS = 128


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACKED_FOR_ROWS)


def _onednn_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`inputs @ weight.T + bias` for a `weight` packed by `_reorder_linear_weight` (of `out_features` rows)."""
    rows = inputs.reshape(-1, inputs.shape[-1]).contiguous()
    outputs = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return outputs.view(*inputs.shape[:-1], outputs.shape[-1])


class _FrozenLinear(torch.autograd.Function):
    """`linear` through oneDNN with weights that are not trained: the backward gives the inputs' gradient alone."""

    @staticmethod
    def forward(ctx, inputs, weight, transposed, bias):
        ctx.transposed = transposed
        return _onednn_linear(inputs, weight, bias)

    @staticmethod
    @once_differentiable  # an explanation is not trained through: a double backward fails, not silently wrong
    def backward(ctx, grad):
        return _onednn_linear(grad, ctx.transposed, None), None, None, None


# weight -> (its version and storage when packed, packed weight, packed transpose), while the weight lives: a model
# explained again (the demo's next request, the next batch of an evaluation) is not packed again.
_PACKED = WeakIdKeyDictionary()


def _packs(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` (a `linear`'s, or a convolution's flattened to `[out, in x kernel]`) and its transpose, packed."""
    stamp = (weight._version, weight.data_ptr())  # changed in place (a training step) or given new storage: repack
    entry = _PACKED.get(weight)
    if entry is None or entry[0] != stamp:
        values = weight.detach().flatten(1)
        entry = (stamp, _pack(values), _pack(values.t()))
        _PACKED[weight] = entry
    return entry[1], entry[2]


def _detached(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.detach()


class OneDNNLinears(TorchFunctionMode):
    """Under this mode (this thread only), fp32 CPU `linear` calls, and convolutions that cut an image into patches
    (a ViT's patch embedding: stride = kernel), run through oneDNN; their weights get no gradient."""

    def __init__(self):
        super().__init__()
        self.products = 0  # how many products ran through oneDNN
        self.batched = onednn_batched_products()

    def __enter__(self):
        if self.batched:
            _batched_products_through_onednn(True)
        return super().__enter__()

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        if self.batched:
            _batched_products_through_onednn(False)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2:
            inputs, weight, *rest = args
            bias = rest[0] if rest else kwargs.get("bias")
            if _eligible(inputs, weight, bias) and weight.dim() == 2:
                self.products += 1
                return _FrozenLinear.apply(inputs, *_packs(weight), _detached(bias))
        elif func is F.conv2d and _is_patch_embedding(*args, **kwargs):
            self.products += 1
            return _patch_embedding(*args, **kwargs)
        elif func is F.scaled_dot_product_attention and self.batched:
            outputs = _short_attention(*args, **kwargs)
            if outputs is not None:
                self.products += 1
                return outputs
        return func(*args, **kwargs)


def _short_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
) -> torch.Tensor | None:
    """`scaled_dot_product_attention` as two batched products and a softmax, for up to `SHORT_ATTENTION_KEYS` keys
    without dropout, causal mask or grouped heads, where no query is masked from every key; `None` otherwise."""
    tensors = [query, key, value] + ([attn_mask] if attn_mask is not None else [])
    if (
        dropout_p or is_causal or enable_gqa or query.dim() != 4 or key.shape[-2] > SHORT_ATTENTION_KEYS
        or not all(type(t) in (torch.Tensor, nn.Parameter) and t.device.type == "cpu" for t in tensors)
        or not all(t.dtype == torch.float32 for t in (query, key, value))
    ):  # fmt: skip
        return None
    if attn_mask is not None:
        allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf")
        if not allowed.any(-1).all():  # a query masked from every key: left to PyTorch's own rule for it
            return None
    query = query * (query.shape[-1] ** -0.5 if scale is None else scale)  # fewer numbers than the scores
    one_query = query.shape[-2] == 1  # the first token alone (`kd_hf.explain.first_token`)
    if one_query:  # products of vectors, elementwise: as batched products their backward is of outer products, slow
        scores = (key * query).sum(-1).unsqueeze(-2)
    else:  # the heads one after another: `matmul` would copy the models' head views anyway, the keys transposed
        scores = torch.matmul(query.contiguous(), key.contiguous().transpose(-2, -1))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    probabilities = scores.softmax(-1)
    if one_query:
        return (probabilities.transpose(-2, -1) * value).sum(-2, keepdim=True)
    return torch.matmul(probabilities, value.contiguous())


_flag_lock = threading.Lock()
_flag_users = 0
_flag_before = None


def _batched_products_through_onednn(enable: bool) -> None:
    """Route PyTorch's fp32 `matmul` / `bmm` through oneDNN while any explanation (of any thread) runs. PyTorch does
    so when `torch.backends.mkldnn.matmul.fp32_precision` is "bf16"; `onednn_batched_products` has checked that this
    CPU's oneDNN computes them in fp32 all the same."""
    global _flag_users, _flag_before
    with _flag_lock:
        if enable:
            if _flag_users == 0:
                _flag_before = torch.backends.mkldnn.matmul.fp32_precision
                torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            _flag_users += 1
        else:
            _flag_users -= 1
            if _flag_users == 0:
                torch.backends.mkldnn.matmul.fp32_precision = _flag_before


def _is_patch_embedding(inputs, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> bool:
    """A convolution of non-overlapping patches that tile the image: stride = kernel, no padding or dilation."""
    if not (_eligible(inputs, weight, bias) and inputs.dim() == 4 and weight.dim() == 4 and groups == 1):
        return False
    kernel, pairs = tuple(weight.shape[-2:]), lambda value: (value, value) if isinstance(value, int) else tuple(value)
    return (
        pairs(stride) == kernel and padding in (0, (0, 0), "valid") and pairs(dilation) == (1, 1)
        and inputs.shape[-2] % kernel[0] == 0 and inputs.shape[-1] % kernel[1] == 0
    )  # fmt: skip


def _patch_embedding(inputs, weight, bias=None, *args, **kwargs) -> torch.Tensor:
    """The convolution of `_is_patch_embedding` as one product of the flattened patches and the flattened kernel."""
    batch, channels, height, width = inputs.shape
    out_channels, _, kernel_height, kernel_width = weight.shape
    rows, columns = height // kernel_height, width // kernel_width
    patches = inputs.reshape(batch, channels, rows, kernel_height, columns, kernel_width).permute(0, 2, 4, 1, 3, 5)
    outputs = _FrozenLinear.apply(patches.reshape(batch, rows, columns, -1), *_packs(weight), _detached(bias))
    return outputs.permute(0, 3, 1, 2).contiguous()


def _eligible(inputs, weight, bias) -> bool:
    """Plain fp32 CPU tensors: no sharded (`DTensor`), quantised or other subclass, whose ops are their own."""
    tensors = [t for t in (inputs, weight, bias) if t is not None]
    return all(type(t) in (torch.Tensor, nn.Parameter) for t in tensors) and all(
        t.dtype == torch.float32 and t.device.type == "cpu" and t.layout == torch.strided for t in tensors
    )


def _seconds(function, repeats: int = 3) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def onednn_is_faster() -> bool:
    """Whether oneDNN's fp32 `linear` is at least `MIN_SPEEDUP` times PyTorch's own, on a product of the shape of an
    explanation's (1,024 rows, 384 -> 1,536), at this process's thread count; `False` where oneDNN is missing."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    generator = torch.Generator().manual_seed(0)
    inputs, weight = torch.randn(1024, 384, generator=generator), torch.randn(1536, 384, generator=generator)
    try:
        packed = _pack(weight)
        onednn = _seconds(lambda: _onednn_linear(inputs, packed, None))
    except RuntimeError as error:  # a build whose oneDNN lacks the op
        logger.info("oneDNN linear unavailable (%s): explanations use PyTorch's own.", error)
        return False
    default = _seconds(lambda: F.linear(inputs, weight))
    logger.info("fp32 linear: oneDNN %.2f ms, PyTorch %.2f ms.", 1e3 * onednn, 1e3 * default)
    return default >= MIN_SPEEDUP * onednn


@functools.cache
def onednn_batched_products() -> bool:
    """Whether PyTorch's oneDNN route for fp32 batched products (taken when `fp32_precision` is "bf16") is at least
    `MIN_SPEEDUP` times faster than its default on an attention's products here, and as exact: its error against
    float64 within 30x the default's on 1,536-long sums (bf16 arithmetic: about 1,000x). On CPUs where oneDNN
    does compute in bf16 (those with AMX), this is `False` and nothing changes."""
    matmul = torch.backends.mkldnn.matmul
    if not torch.backends.mkldnn.is_available() or not hasattr(matmul, "fp32_precision"):
        return False
    generator = torch.Generator().manual_seed(0)
    scores, values = torch.randn(256, 48, 32, generator=generator), torch.randn(256, 32, 48, generator=generator)
    rows, columns = torch.randn(4, 64, 1536, generator=generator), torch.randn(4, 1536, 64, generator=generator)
    exact = torch.matmul(rows.double(), columns.double())
    before = matmul.fp32_precision
    try:
        default = _seconds(lambda: torch.bmm(scores, values))
        error = (torch.matmul(rows, columns) - exact).abs().max()
        matmul.fp32_precision = "bf16"
        onednn = _seconds(lambda: torch.bmm(scores, values))
        onednn_error = (torch.matmul(rows, columns) - exact).abs().max()
    finally:
        matmul.fp32_precision = before
    logger.info("fp32 bmm: oneDNN %.3f ms (error %.1e), PyTorch %.3f ms (%.1e).", 1e3 * onednn, onednn_error,
                1e3 * default, error)  # fmt: skip
    return bool(onednn_error <= 30 * error) and default >= MIN_SPEEDUP * onednn


def onednn_linears(device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """A context in which an explanation's fp32 products (`linear`, a ViT's patch embedding, short attention) run
    through oneDNN, where that is faster on this CPU (or `KD_HF_ONEDNN_LINEAR=1`); otherwise one that changes
    nothing."""
    switch = os.environ.get(SWITCH, "").strip()
    if torch.device(device).type != "cpu" or switch == "0":
        return contextlib.nullcontext()
    if switch == "1" or onednn_is_faster():
        return OneDNNLinears()
    return contextlib.nullcontext()
