"""``optimizer=adamw``: AdamW with decoupled weight decay, the usual choice for fine-tuning BERT."""

from __future__ import annotations

import dataclasses

import torch

from bdrun.optimizers.base import Optimizer, OptimizerConfig
from bdrun.optimizers.registry import OPTIMIZERS


@dataclasses.dataclass
class AdamWConfig(OptimizerConfig):
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@OPTIMIZERS.register("adamw", AdamWConfig)
class AdamW(Optimizer):
    config: AdamWConfig

    def make(self, groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=tuple(self.config.betas), eps=self.config.eps)
