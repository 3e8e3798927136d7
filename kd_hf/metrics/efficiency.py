"""Size and speed of a model: parameters, megabytes on disk, median latency of a forward pass."""

import statistics
import time

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def size_on_disk_mb(model: nn.Module) -> float:
    """Megabytes of the model's weights as one safetensors file (what `save_pretrained` writes, unsharded)."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    return len(safetensors_bytes(state)) / 2**20


@torch.inference_mode()
def median_latency_ms(model: nn.Module, inputs: dict, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass over `inputs`, in milliseconds, after `warmup` passes."""
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
