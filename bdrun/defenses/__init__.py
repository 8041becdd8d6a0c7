"""Defenses. Importing this package registers every defense in :data:`DEFENSES`."""

from bdrun.defenses import (  # noqa: F401  (registration side effect)
    e_pur,
    fine_mixing,
    fine_pruning,
    fine_purifying,
    fine_tuning,
    meft,
    none,
    reinit,
)
from bdrun.defenses.base import Defense, Purifier
from bdrun.defenses.registry import DEFENSES

__all__ = ["DEFENSES", "Defense", "Purifier"]
