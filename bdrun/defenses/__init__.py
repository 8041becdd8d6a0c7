"""Defenses. Importing this package registers every defense in :data:`DEFENSES`."""

from bdrun.defenses import fine_tuning, none  # noqa: F401  (registration side effect)
from bdrun.defenses.base import Defense, Purifier
from bdrun.defenses.registry import DEFENSES

__all__ = ["DEFENSES", "Defense", "Purifier"]
