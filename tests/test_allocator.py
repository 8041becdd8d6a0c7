"""The allocator tuning keeps freed memory for reuse: a training-like pattern of large blocks that are freed and
re-allocated every step page-faults its memory in once, not every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from bdrun.allocator import keep_freed_memory

# A step allocates (and touches) 16 blocks of 1-8 MiB, ~72 MiB in all, with sizes shifting from step to step as
# activations do, then frees them. Prints the page faults of the first step and of the nine after it.
STEPS = """
import resource, sys
import torch
from bdrun.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step(k):
    held = [torch.ones((1 << 18) * (1 + (i + k) % 8)) for i in range(16)]
    del held
start = faults()
step(0)
first = faults()
for k in range(1, 10):
    step(k)
print(first - start, faults() - first)
"""


def page_faults(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True).stdout
    first, rest = out.split()
    return int(first), int(rest)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    # How much the later steps fault in depends on where the heap and mmaps land (address-space randomisation),
    # so the bounds leave room: over 38 runs here the nine later steps faulted in 0.12-0.37 of the first step's
    # pages with the tuning and 1.11-8.33 of them without it, in a few discrete modes.
    first, rest = page_faults("tuned")
    assert first > 10_000  # the first step touches ~72 MiB (18k pages) of fresh memory
    assert rest < 0.6 * first  # the nine steps after it reuse it (a little more heap as sizes shift)
    plain_first, plain_rest = page_faults("plain")
    assert plain_rest > 0.9 * plain_first  # without the tuning the later steps fault memory in again


def test_the_users_own_malloc_settings_win(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert keep_freed_memory() is False
