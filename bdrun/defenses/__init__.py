"""Defenses. Importing this package registers every defense in :data:`DEFENSES`."""

from bdrun.defenses import dan, fine_tuning, none, rap, strip  # noqa: F401  (registration side effect)
from bdrun.defenses.base import Defense, Detector, Purifier
from bdrun.defenses.registry import DEFENSES

__all__ = ["DEFENSES", "Defense", "Detector", "Purifier"]
