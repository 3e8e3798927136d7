"""oneDNN's fp32 `linear` for explanations (`kd_hf.explain.kernels`): PyTorch's values and input gradients, no weight
gradients, and explanations equal to PyTorch's own; chosen by measurement or by `KD_HF_ONEDNN_LINEAR`."""

import contextlib
import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_switch_keeps_explanations
from torch import nn

from kd_hf.explain import kernels
from kd_hf.explain.kernels import OneDNNLinears, onednn_is_faster, onednn_linears


@pytest.mark.parametrize("shape", [(3, 5, 16), (7, 16), (16,)])
@pytest.mark.parametrize("bias", [True, False])
def test_outputs_and_input_gradients_are_pytorchs(shape, bias):
    torch.manual_seed(0)
    linear = nn.Linear(16, 8, bias=bias)
    inputs = torch.randn(shape, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 8)
    expected = linear(inputs)
    (expected_gradient,) = torch.autograd.grad(expected, inputs, upstream)

    with OneDNNLinears() as mode:
        outputs = linear(inputs)
        (gradient,) = torch.autograd.grad(outputs, inputs, upstream)

    assert mode.products == 1  # the product ran through oneDNN
    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-5)


def test_weights_get_no_gradient_and_an_explanation_cannot_be_trained_through():
    linear = nn.Linear(4, 3)
    inputs = torch.randn(2, 4, requires_grad=True)
    with OneDNNLinears():
        linear(inputs).sum().backward()
        assert inputs.grad is not None and linear.weight.grad is None and linear.bias.grad is None
        (gradient,) = torch.autograd.grad(linear(inputs).square().sum(), inputs, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiate"):
            gradient.sum().backward()


def test_other_precisions_and_other_threads_run_as_before():
    linear = nn.Linear(4, 3).to(torch.bfloat16)
    other = nn.Linear(4, 3)
    inputs = torch.randn(2, 4)
    in_thread = {}

    def train_elsewhere():  # the mode is this thread's: another thread's weights still get their gradient
        other(inputs).sum().backward()
        in_thread["weight_gradient"] = other.weight.grad is not None

    expected = linear(inputs.bfloat16())
    with OneDNNLinears() as mode:
        assert torch.equal(linear(inputs.bfloat16()), expected)
        thread = threading.Thread(target=train_elsewhere)
        thread.start()
        thread.join()
    assert mode.products == 0 and in_thread["weight_gradient"]


@pytest.mark.parametrize("kernel", [4, (2, 4)])
def test_a_patch_embedding_is_the_convolutions_and_other_convolutions_are_left_alone(kernel):
    torch.manual_seed(0)
    patches = nn.Conv2d(3, 6, kernel_size=kernel, stride=kernel)
    overlapping = nn.Conv2d(3, 6, kernel_size=3, stride=2, padding=1)
    pixels, upstream = (
        torch.randn(2, 3, 8, 8, requires_grad=True),
        torch.randn(2, 6, *patches(torch.randn(1, 3, 8, 8)).shape[-2:]),
    )
    expected = patches(pixels)
    (expected_gradient,) = torch.autograd.grad(expected, pixels, upstream)

    with OneDNNLinears() as mode:
        outputs = patches(pixels)
        (gradient,) = torch.autograd.grad(outputs, pixels, upstream)
        assert mode.products == 1
        overlapping(pixels)
        assert mode.products == 1  # not a patch embedding: PyTorch's own convolution
    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-5)


def test_packed_weights_are_kept_until_the_weights_change():
    linear, inputs = nn.Linear(4, 3), torch.randn(2, 4)
    with OneDNNLinears():
        before = linear(inputs)
    with torch.no_grad():
        linear.weight.mul_(2.0)  # an optimizer step: the packed copy is out of date
    with OneDNNLinears():
        after = linear(inputs)
    torch.testing.assert_close(after, linear(inputs))
    torch.testing.assert_close(after - linear.bias, 2 * (before - linear.bias))


@pytest.mark.parametrize("queries", [5, 1])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_short_attention_is_pytorchs_in_values_and_gradients(mask, queries):
    torch.manual_seed(0)
    heads = torch.randn(2, 5, 3, 3 * 8, requires_grad=True)  # [batch, tokens, heads, q|k|v], as models view them
    query, key, value = (part.transpose(1, 2) for part in heads.split(8, -1))
    query = query[:, :, :queries]
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :].expand(2, 1, queries, 5)
    masks = {None: None, "bool": keep, "float": torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))}
    upstream = torch.randn(2, 3, queries, 8)
    for scale in (None, 0.3):
        expected = F.scaled_dot_product_attention(query, key, value, attn_mask=masks[mask], scale=scale)
        outputs = kernels._short_attention(query, key, value, attn_mask=masks[mask], scale=scale)
        torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            torch.autograd.grad(outputs, heads, upstream)[0], torch.autograd.grad(expected, heads, upstream)[0],
            atol=1e-5, rtol=1e-5,
        )  # fmt: skip


def test_attention_the_short_path_does_not_cover_is_left_to_pytorch():
    query = torch.randn(1, 2, 4, 8)
    long = torch.randn(1, 2, kernels.SHORT_ATTENTION_KEYS + 1, 8)
    no_key = torch.ones(1, 1, 4, 4, dtype=torch.bool).index_fill(2, torch.tensor([1]), False)
    assert kernels._short_attention(query, query, query, is_causal=True) is None
    assert kernels._short_attention(query, query, query, dropout_p=0.1) is None
    assert kernels._short_attention(query, long, long) is None
    assert kernels._short_attention(query, query, query, attn_mask=no_key) is None  # a query that sees no key
    assert kernels._short_attention(query.double(), query.double(), query.double()) is None


def test_batched_products_go_through_onednn_only_within_explanations(monkeypatch):
    matmul = torch.backends.mkldnn.matmul
    monkeypatch.setattr(kernels, "onednn_batched_products", lambda: True)
    before = matmul.fp32_precision
    seen = {}

    def explain_elsewhere():  # another thread's explanation overlaps: the flag stays until the last one ends
        with OneDNNLinears():
            seen["inside other"] = matmul.fp32_precision
            started.set()
            finish.wait()

    started, finish = threading.Event(), threading.Event()
    with OneDNNLinears():
        thread = threading.Thread(target=explain_elsewhere)
        thread.start()
        started.wait()
        seen["inside"] = matmul.fp32_precision
    seen["after one"] = matmul.fp32_precision
    finish.set()
    thread.join()
    assert seen == {"inside other": "bf16", "inside": "bf16", "after one": "bf16"}
    assert matmul.fp32_precision == before
    monkeypatch.setattr(kernels, "onednn_batched_products", lambda: False)
    with OneDNNLinears() as mode:
        assert matmul.fp32_precision == before
        query = torch.randn(1, 2, 4, 8)
        F.scaled_dot_product_attention(query, query, query)
        assert mode.products == 0  # PyTorch's own attention where oneDNN's batched products are not exact or faster


def test_onednn_batched_products_are_checked_to_be_fp32(monkeypatch):
    kernels.onednn_batched_products.cache_clear()
    real_bmm = torch.bmm
    try:  # oneDNN computing in bf16, as on CPUs with AMX: too inexact to be used
        monkeypatch.setattr(torch, "matmul", lambda a, b: real_bmm(a.bfloat16(), b.bfloat16()).float()
                            if torch.backends.mkldnn.matmul.fp32_precision == "bf16" else real_bmm(a, b))  # fmt: skip
        assert kernels.onednn_batched_products() is False
    finally:
        kernels.onednn_batched_products.cache_clear()


def test_explanations_are_the_same_through_onednn(monkeypatch, make_bert, make_vit, minilm_tokenizer):
    assert_switch_keeps_explanations(
        monkeypatch, "KD_HF_ONEDNN_LINEAR", ("1", "0"), make_bert(seed=3), make_vit(seed=3), minilm_tokenizer
    )


def test_the_switch_and_the_device_choose_the_kernel(monkeypatch):
    monkeypatch.setenv("KD_HF_ONEDNN_LINEAR", "1")
    assert isinstance(onednn_linears("cpu"), OneDNNLinears)
    assert isinstance(onednn_linears("meta"), contextlib.nullcontext)  # GPUs and others keep their own kernels
    monkeypatch.setenv("KD_HF_ONEDNN_LINEAR", "0")
    assert isinstance(onednn_linears("cpu"), contextlib.nullcontext)
    monkeypatch.delenv("KD_HF_ONEDNN_LINEAR")
    assert isinstance(onednn_linears("cpu"), OneDNNLinears if onednn_is_faster() else contextlib.nullcontext)


def test_without_onednn_pytorchs_own_kernel_is_kept(monkeypatch):
    onednn_is_faster.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    try:
        assert onednn_is_faster() is False
        assert isinstance(onednn_linears("cpu"), contextlib.nullcontext)
    finally:
        onednn_is_faster.cache_clear()
