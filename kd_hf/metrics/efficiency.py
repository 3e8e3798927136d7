"""Size and speed of a model: parameters, megabytes on disk, median latency of a forward pass (alone, or in turns
with other models)."""

import statistics
import time
from collections.abc import Callable

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def size_on_disk_mb(model: nn.Module) -> float:
    """Megabytes of the model's weights as one safetensors file (what `save_pretrained` writes, unsharded)."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    return len(safetensors_bytes(state)) / 2**20


def median_latencies(runners: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of each runner (a call that runs one forward pass), timed in rotating turns.

    Every round runs each runner once, the first of the round rotating, so that a slow moment of a shared machine
    falls on all of them alike and their ratios hold where their absolute times do not. `warmup` rounds come first.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    names, times = list(runners), {name: [] for name in runners}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def forward_runner(model: nn.Module, inputs: dict) -> Callable[[], None]:
    """A runner for `median_latencies`: one forward pass of `model` over `inputs`, without autograd."""

    def forward():
        with torch.inference_mode():
            model(**inputs)

    return forward


def median_latency_ms(model: nn.Module, inputs: dict, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass over `inputs`, in milliseconds, after `warmup` passes."""
    return median_latencies({"model": forward_runner(model, inputs)}, repeats, warmup)["model"]
