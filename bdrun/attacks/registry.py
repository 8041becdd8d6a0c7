"""The attack registry; importing :mod:`bdrun.attacks` fills it."""

from bdrun.registry import Registry

ATTACKS: Registry = Registry("attack")
