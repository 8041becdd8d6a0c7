"""What the attacks that train clean and poisoned data as two tasks share (gradient control, GradNorm).

Both split each batch into its clean rows and its poisoned rows, take each task's gradient over the trainable
parameters grouped by encoder layer, and learn a few per-step weights whose course over training is the
evidence that the method acted; that course is kept here as a bounded trace.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from bdrun.pet import HEAD_PREFIX  # the classification head: the paper's output layer o

LAYER = re.compile(r"\.layer\.(\d+)\.")
TRACE_ENTRIES = 64  # entries of a weight trace kept in the diagnostics before thinning


class TrainableLayers:
    """The model's trainable parameters (in ``named_parameters`` order) and their positions per encoder layer
    (names with ``.layer.<i>.``) and in the classification head."""

    def __init__(self, model: torch.nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.by_layer: dict[int, list[int]] = {}
        self.head: list[int] = []
        for position, (name, _) in enumerate(named):
            found = LAYER.search(name)
            if name.startswith(HEAD_PREFIX):
                self.head.append(position)
            elif found:
                self.by_layer.setdefault(int(found.group(1)), []).append(position)


def split_tasks(rows: list[int], poisoned: list[bool]) -> tuple[list[int], list[int]]:
    """A batch's clean rows and poisoned rows: the two tasks' batches ``x_c`` and ``x_p``."""
    return [r for r in rows if not poisoned[r]], [r for r in rows if poisoned[r]]


class WeightTrace:
    """Per-step weights, kept as ``[step, w…]`` every ``stride`` steps; when the trace outgrows
    :data:`TRACE_ENTRIES`, every other entry goes and the stride doubles, so a run of any length keeps a short,
    evenly spaced course (checkpointed with the run, so a resumed run continues the same trace)."""

    def __init__(self) -> None:
        self.entries: list[list[float]] = []
        self.stride = 1

    def record(self, step: int, weights: list[float]) -> None:
        if step % self.stride == 0:
            self.entries.append([step, *weights])
        if len(self.entries) > TRACE_ENTRIES:
            self.stride *= 2
            self.entries = [entry for entry in self.entries if entry[0] % self.stride == 0]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.entries, "stride": self.stride}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries, self.stride = [list(entry) for entry in state["history"]], int(state["stride"])
