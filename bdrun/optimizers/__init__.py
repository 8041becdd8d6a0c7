"""Optimizers. Importing this package registers every optimizer in :data:`OPTIMIZERS`."""

from bdrun.optimizers import adamw, child_tuning, sam, sgd  # noqa: F401  (registration side effect)
from bdrun.optimizers.base import Optimizer, OptimizerConfig
from bdrun.optimizers.registry import OPTIMIZERS

__all__ = ["OPTIMIZERS", "Optimizer", "OptimizerConfig"]
