"""Freed memory kept for the next pass while an explanation runs on CPU, where the C library is glibc.

An explanation runs the model forward and backward on one batch of interpolated or occluded inputs after another, all
of the same shapes. PyTorch takes CPU tensors from `malloc`. glibc hands freed memory back to the operating system once
more than its trim threshold lies free at the top of the heap, and maps blocks above its mmap threshold afresh each
time. So every pass faulted its pages in again: on the MNIST ViT, about 100,000 page faults per 32 images, 12-17% of
the time spent in the kernel (measured 2026-12-06; docs/benchmarks.md).

Within `keep_freed_memory()`, blocks up to 32 MiB come from the heap (`M_MMAP_THRESHOLD`; the largest value glibc's
own adaptive threshold takes) and up to 1 GiB of freed memory stays with the process for the next pass
(`M_TRIM_THRESHOLD`). When the last explanation of the process ends, the trim threshold drops to 64 MiB: the pair
glibc itself settles on once it has freed a 32 MiB block, so the process hands memory back again at its next free.

Nothing changes on a GPU, with another C library or allocator (`LD_PRELOAD`), where the user has tuned glibc's malloc
(`MALLOC_*` variables, `GLIBC_TUNABLES`), or with `KD_HF_KEEP_FREED_MEMORY=0`.
"""

import contextlib
import ctypes
import functools
import os
import sys
import threading

import torch


SWITCH = "KD_HF_KEEP_FREED_MEMORY"
# glibc's `mallopt` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_WHILE_EXPLAINING = 1 << 30
TRIM_AFTERWARDS = 2 * MMAP_THRESHOLD  # what glibc sets with an mmap threshold of 32 MiB

_lock = threading.Lock()
_users = 0


@functools.cache
def glibc():
    """The process's C library if it is glibc and its malloc is in use, else `None`."""
    if sys.platform != "linux" or os.environ.get("LD_PRELOAD"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols of the process, the C library's among them
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _applies(device) -> bool:
    """On CPU, with glibc's malloc untuned by the user and the switch not off."""
    tuned = "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") for name in os.environ
    )
    switched_off = os.environ.get(SWITCH, "").strip() == "0"
    return torch.device(device).type == "cpu" and glibc() is not None and not tuned and not switched_off


@contextlib.contextmanager
def keep_freed_memory(device: torch.device | str = "cpu"):
    """While any explanation (of any thread) is in this context, memory freed by one pass stays with the process for
    the next (see the module's docstring); elsewhere nothing changes."""
    global _users
    if not _applies(device):
        yield
        return
    libc = glibc()
    with _lock:
        if _users == 0:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_EXPLAINING)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTERWARDS)
