"""Attacks. Importing this package registers every attack in :data:`ATTACKS`."""

from bdrun.attacks import (  # noqa: F401  (registration side effect)
    addsent,
    badnets,
    ep,
    gradient_control,
    gradnorm,
    lwp,
    none,
    ripple,
    surgery,
    syntactic,
)
from bdrun.attacks.base import Attack, DataPoisoningAttack, ModelEditingAttack
from bdrun.attacks.registry import ATTACKS

__all__ = ["ATTACKS", "Attack", "DataPoisoningAttack", "ModelEditingAttack"]
