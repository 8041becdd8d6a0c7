"""Will a round's client updates fit in memory? Checked before any stage, so that a federation too large for the
machine costs one line instead of a swap storm or an out-of-memory kill after the first clients have trained.

A round holds its clients' updates as ONE ``(N, D)`` float32 tensor on the CPU (:mod:`bdrun.federated.federation`:
updates are copied off the device as each client finishes, whatever ``device`` is), so what must fit is
N x D x 4 bytes of host memory, N the clients taking part in a round and D the trainable parameters: 866 MB for
10 MiniLM-L6 clients, 44 GB for 100 BERT-base ones. A GPU's memory is not involved (the model on it is one
copy, trained one client at a time). With ``model.tuning=lora`` or ``adapter`` D is the PET parameters and the
head only (about 1% of a BERT's), which is how federated NLP is done in practice and what the hint says.

The bound is the updates alone (N x D x 4 bytes), against the memory the kernel reports as available
(``MemAvailable``: free plus reclaimable caches, capped by a cgroup v2 limit) when the check runs, with the
model already loaded. It is a floor, not the peak: the distance computations (Krum family, the regime
diagnostics) add a float64 column chunk of N x 2M entries (16 MB per client when D exceeds 2M), and the local
training its optimizer state; ``docs/results/federated.md`` has the measured peaks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from bdrun.errors import check

BYTES_PER_ENTRY = 4  # float32 updates
MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2 unified hierarchy, as seen from inside the process's own cgroup


def available_bytes() -> int:
    """Host memory available to a new allocation: Linux's ``MemAvailable`` (else free physical pages), capped by
    this process's cgroup v2 limit when it has one (a batch scheduler's job or a container sees the host's
    memory in /proc/meminfo but is killed at its own limit)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return available


def trainable_count(model: torch.nn.Module) -> int:
    """D: the entries of a client update (frozen parameters never travel)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def update_bytes(clients: int, trainable: int) -> int:
    return clients * trainable * BYTES_PER_ENTRY


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def check_updates_fit(clients: int, trainable: int, knob: str, available: int | None = None) -> None:
    """Refuse in one line a round whose ``clients`` x ``trainable`` float32 updates exceed ``available`` bytes
    (default: :func:`available_bytes`); ``knob`` names the setting that sets ``clients``."""
    available = available_bytes() if available is None else available
    needed = update_bytes(clients, trainable)
    fits = available // max(1, trainable * BYTES_PER_ENTRY)
    check(
        needed <= available,
        f"{knob}={clients} clients x {trainable:,} trainable parameters x {BYTES_PER_ENTRY} bytes = "
        f"{gigabytes(needed)} of client updates per round, more than the {gigabytes(available)} of memory "
        f"available; use model.tuning=lora (or adapter) to send only the PET parameters, or at most {fits} "
        "clients per round",
    )
