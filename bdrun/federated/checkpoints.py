"""The federation's per-round checkpoints: global weights, the aggregator's state and the round log.

After each round they are written to ``<work>/federation/round-NNNN/`` atomically (a partial folder renamed into
place) and older rounds are removed, so a killed run finds either the previous or the new round, never half of one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "federation"


def save_round(folder: Path, done: int, weights: torch.Tensor, state: dict[str, Any]) -> None:
    """Atomically write the checkpoint after ``done`` finished rounds and drop older ones."""
    final = folder / f"round-{done:04d}"
    partial = folder / f".round-{done:04d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({"global": weights.contiguous()}, str(partial / "global.safetensors"))
    (partial / "state.json").write_text(json.dumps(state))
    partial.rename(final)
    for old in folder.glob("round-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def load_round(folder: Path) -> tuple[int, torch.Tensor, dict[str, Any]] | None:
    found = sorted(folder.glob("round-*")) if folder.is_dir() else []
    if not found:
        return None
    latest = found[-1]
    state = json.loads((latest / "state.json").read_text())
    return int(state["done"]), load_file(str(latest / "global.safetensors"))["global"], state
