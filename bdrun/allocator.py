"""Keep freed memory in the process, so training does not hand the same pages back to the kernel every step.

Why: glibc's malloc serves large blocks with fresh ``mmap`` pages and returns them on ``free``; a training step
frees and re-allocates the same large tensors (attention and feed-forward activations and their gradients) every
step, so each step page-faults its memory back in and the kernel zeroes it again. A MiniLM-L6
job here spent 2.7 s of system time on 1.25 million page faults. With large blocks kept in the heap and the heap
never trimmed below 1 GiB, the page faults of a training loop fell 2-3x in most runs and its system time by
about half; the wall-time gain was small and noisy (0-3% side by side, ``scripts/bench_allocator.py``,
docs/results/speed.md). PyTorch's CPU tuning guide makes the same point and suggests swapping in jemalloc or
tcmalloc; this gets part of it without a new dependency.

The cost: a process keeps up to ``TRIM_THRESHOLD`` of freed memory instead of returning it, which peak memory
already had to allow. Only glibc (Linux) has ``mallopt``; elsewhere this does nothing. A user's own
``MALLOC_*_`` environment settings win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# glibc's upper limit on 64-bit: blocks below it come from the heap and are reused; larger ones (BERT's 30k x 384
# word-embedding gradient, 47 MB) still get their own mmap
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # free heap memory kept before any is returned to the kernel
TOP_PAD = 64 << 20  # grow the heap in steps of this much (address space only until touched)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True if it was tuned."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
