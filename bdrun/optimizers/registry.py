"""The optimizer registry; importing :mod:`bdrun.optimizers` fills it."""

from bdrun.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
