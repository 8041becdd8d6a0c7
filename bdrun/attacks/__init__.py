"""Attacks. Importing this package registers every attack in :data:`ATTACKS`."""

from bdrun.attacks import addsent, badnets, ep, gradient_control, none, surgery  # noqa: F401  (registration side effect)
from bdrun.attacks.base import Attack, DataPoisoningAttack, ModelEditingAttack
from bdrun.attacks.registry import ATTACKS

__all__ = ["ATTACKS", "Attack", "DataPoisoningAttack", "ModelEditingAttack"]
