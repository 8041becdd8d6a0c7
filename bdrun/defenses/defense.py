"""The root of every defense: its config, what it tells the stages, and the layer-count check.

Below both kinds of defense (:mod:`bdrun.defenses.base` holds the purifiers' shared code,
:mod:`bdrun.defenses.detector` the online detectors'), so that each kind's module imports it and
:mod:`bdrun.defenses.base` can still re-export the detector's names without an import circle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits
from bdrun.errors import check

# How the purify stage stores a changed model into its output folder (only the changed tensors under PET).
SaveWeights = Callable[[torch.nn.Module, Path], None]


@dataclasses.dataclass
class DefenseConfig:
    name: str


class Defense:
    """A defense. The class attributes and :meth:`build` tell the stages what it does; ``kind`` only names the
    family (in messages and docs), nothing switches on it."""

    kind = "none"
    # Part of the purify cache key: bump it when a code change alters what the same config produces, so that
    # cached artifacts of the old code are rebuilt instead of reused.
    revision = 1
    # False for defense=none: the suspect model is evaluated as it is, and there is no purified role.
    defends = True
    # False for an online detector: the purify stage caches its fitted state instead of weights, and the purified
    # role is the suspect model behind it, whose predictions (trust marks, no side effect) are the suspect's.
    changes_weights = True
    # True for a federated aggregator: it defends while a federation trains (the server's rule) rather than on a
    # trained model, so only the federated setting runs it.
    aggregates = False

    def __init__(self, config: DefenseConfig) -> None:
        self.config = config

    def check_labels(self, num_labels: int) -> None:
        """Reject knobs naming a class the dataset lacks, before any stage runs (no such knob by default)."""

    def check_data(self, splits: Splits, seed: int) -> None:
        """Checks that need the loaded data, run before any stage (none by default)."""

    def check_model(self, depth: int) -> None:
        """Reject knobs that count more encoder layers than the run's model has (``depth``), before any stage
        (no such knob by default); the stage checks the same with :func:`check_depth`."""

    def build(
        self, model: torch.nn.Module, splits: Splits, context: StageContext, out: Path, save_weights: SaveWeights
    ) -> dict[str, Any]:
        """The purify stage's work on the suspect ``model``: write what the stage caches into ``out`` (weights
        through ``save_weights``, which knows the run's PET base) and return the defense's diagnostics."""
        raise NotImplementedError


def check_depth(knob: str, count: int | None, depth: int) -> None:
    """A knob that counts encoder layers fits the model: one message before the first stage and at the stage."""
    check(
        count is None or count <= depth,
        f"{knob}={count} but the model has only {depth} encoder layers; use at most {depth}",
    )
