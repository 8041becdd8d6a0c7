"""``optimizer=sgd``: SGD with momentum."""

from __future__ import annotations

import dataclasses

import torch

from bdrun.errors import check
from bdrun.optimizers.base import Optimizer, OptimizerConfig
from bdrun.optimizers.registry import OPTIMIZERS


@dataclasses.dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.momentum < 1, f"optimizer.momentum={self.momentum} must be in [0, 1)")


@OPTIMIZERS.register("sgd", SGDConfig)
class SGD(Optimizer):
    config: SGDConfig

    def make(self, groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=self.config.lr, momentum=self.config.momentum, nesterov=self.config.nesterov)
