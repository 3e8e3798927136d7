"""Freed memory kept between an explanation's passes (`kd_hf.explain.memory`): glibc's thresholds set while any
explanation runs and lowered after the last, nothing touched where the user tuned malloc, and page faults gone."""

import os
import subprocess
import sys
import threading

import pytest
import torch

from kd_hf.explain import explain_images, memory
from kd_hf.explain.memory import keep_freed_memory


KEEP = [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 1 << 30)]
AFTERWARDS = [(memory.M_TRIM_THRESHOLD, 64 << 20)]


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(memory, "glibc", lambda: fake)
    for name in [name for name in os.environ if name.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    return fake


def test_thresholds_are_set_while_any_explanation_runs_and_lowered_after_the_last(libc):
    with keep_freed_memory():
        assert libc.calls == KEEP
        with keep_freed_memory("cpu"):
            pass
        assert libc.calls == KEEP  # the inner one ended, the outer one still runs

        inside, leave = threading.Event(), threading.Event()

        def other_explanation():
            with keep_freed_memory():
                inside.set()
                leave.wait(5)

        thread = threading.Thread(target=other_explanation)
        thread.start()
        inside.wait(5)
    assert libc.calls == KEEP  # the other thread's explanation still runs
    leave.set()
    thread.join()
    assert libc.calls == KEEP + AFTERWARDS

    with keep_freed_memory():
        pass
    assert libc.calls == KEEP + AFTERWARDS + KEEP + AFTERWARDS


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KD_HF_KEEP_FREED_MEMORY", "0"),
        ("MALLOC_TRIM_THRESHOLD_", "1000000"),
        ("MALLOC_ARENA_MAX", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
    ],
)
def test_the_switch_and_a_users_malloc_settings_are_respected(libc, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with keep_freed_memory():
        pass
    assert libc.calls == []


def test_nothing_changes_on_other_devices_or_without_glibc(libc, monkeypatch):
    with keep_freed_memory("meta"):
        assert memory._users == 0
    assert libc.calls == []
    monkeypatch.setattr(memory, "glibc", lambda: None)
    with keep_freed_memory():
        assert memory._users == 0


def test_another_allocator_is_left_alone(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    memory.glibc.cache_clear()
    try:
        assert memory.glibc() is None
    finally:
        monkeypatch.undo()
        memory.glibc.cache_clear()


def test_explanations_keep_freed_memory_while_they_run(libc, make_vit):
    model = make_vit()
    seen = []
    hook = model.vit.register_forward_hook(lambda *args: seen.append(list(libc.calls)))
    explain_images(model, torch.randn(2, 1, 8, 8), n_steps=4, progress=False)
    hook.remove()
    assert seen and all(calls == KEEP for calls in seen)
    assert libc.calls == KEEP + AFTERWARDS


PASSES = """
import contextlib, resource, sys, torch
from kd_hf.explain.memory import keep_freed_memory

def one_pass():  # 56 MiB in blocks of 1-4 MiB, allocated, written and freed, as an explanation's pass does
    tensors = [torch.ones(mebibytes << 18) for mebibytes in (3, 2, 4, 2, 3) * 4]
    del tensors

with keep_freed_memory() if sys.argv[1] == "kept" else contextlib.nullcontext():
    one_pass()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        one_pass()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(memory.glibc() is None, reason="glibc's malloc only (this process's C library is another)")
def test_later_passes_no_longer_fault_their_pages_in():
    def page_faults(mode: str, **malloc_settings) -> int:
        environment = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
        run = subprocess.run([sys.executable, "-c", PASSES, mode], capture_output=True, text=True,
                             env={**environment, **malloc_settings})  # fmt: skip
        assert run.returncode == 0, run.stderr
        return int(run.stdout.split()[-1])

    five_passes_of_pages = 5 * 56 * 256
    # The control: glibc's starting thresholds, held, hand the memory back after every pass and the pages fault in
    # again (its adaptive thresholds do so for some patterns and not others, which would not make a steady test).
    returned = {"MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}
    assert page_faults("default", **returned) > five_passes_of_pages // 2
    assert page_faults("kept") < five_passes_of_pages // 20
