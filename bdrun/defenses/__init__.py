"""Defenses. Importing this package registers every defense in :data:`DEFENSES`."""

from bdrun.defenses import (  # noqa: F401  (registration side effect)
    dan,
    e_pur,
    fine_mixing,
    fine_pruning,
    fine_purifying,
    fine_tuning,
    meft,
    none,
    rap,
    reinit,
    strip,
)
from bdrun.defenses.base import Defense, Detector, Purifier
from bdrun.defenses.registry import DEFENSES
from bdrun.federated import defense as _federated  # noqa: F401  (registers the aggregators as defenses)

__all__ = ["DEFENSES", "Defense", "Detector", "Purifier"]
