"""The defense registry; importing :mod:`bdrun.defenses` fills it."""

from bdrun.registry import Registry

DEFENSES: Registry = Registry("defense")
