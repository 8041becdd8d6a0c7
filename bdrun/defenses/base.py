"""The shared interface of defenses.

A purifier gets the suspect model, the stage context (with the pre-trained weights on demand) and the
defender's small clean set, changes the model in place and returns its diagnostics. Online detectors
(which flag inputs instead of changing weights) will share the registry with their own interface.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.errors import check


@dataclasses.dataclass
class DefenseConfig:
    name: str


@dataclasses.dataclass
class CleanDataConfig(DefenseConfig):
    """Knobs of a defense that owns a small clean set drawn from the (clean) training split."""

    # <= 1: fraction of the training set; > 1: number of samples.
    clean_size: float = 0.05
    epochs: int = 3  # fine-tuning epochs on the clean set
    lr: float | None = None  # null: the optimizer group's lr

    def __post_init__(self) -> None:
        check(self.clean_size > 0, f"defense.clean_size={self.clean_size} must be a positive fraction or count")
        check(self.epochs >= 1, f"defense.epochs={self.epochs} must be at least 1")
        check(self.lr is None or self.lr > 0, f"defense.lr={self.lr} must be positive (or null)")


def clean_subset(splits: Splits, clean_size: float, seed: int) -> TextDataset:
    """The defender's clean data: a seeded sample of the clean training split."""
    size = round(clean_size * len(splits.train)) if clean_size <= 1 else int(clean_size)
    check(size >= 1, f"defense.clean_size={clean_size} selects no samples; raise it")
    return splits.train.sample(size, seed)


class Defense:
    kind = "none"

    def __init__(self, config: DefenseConfig) -> None:
        self.config = config


class Purifier(Defense):
    """Returns a purified copy of the weights (modifies ``model`` in place)."""

    kind = "purifier"

    def purify(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        raise NotImplementedError
