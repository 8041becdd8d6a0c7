"""Coordinate-wise trimmed mean (Yin et al., 2018): drops the extremes per coordinate, no client as a whole."""

from __future__ import annotations

import dataclasses
import math

import torch

from bdrun.errors import check
from bdrun.federated.aggregators.base import AGGREGATORS, AggregatorConfig, CoordinateRule


@dataclasses.dataclass
class TrimmedMeanConfig(AggregatorConfig):
    trim: float = 0.1  # per coordinate, drop this fraction of the values at each end (floor(trim * n) each)

    def __post_init__(self) -> None:
        check(0 <= self.trim < 0.5, f"defense.trim={self.trim} must be in [0, 0.5), e.g. 0.1")


@AGGREGATORS.register("trimmed_mean", TrimmedMeanConfig)
class TrimmedMean(CoordinateRule):
    """Coordinate-wise mean after dropping the floor(trim * n) smallest and largest values (scipy's trim_mean)."""

    config: TrimmedMeanConfig

    def reduce(self, block: torch.Tensor, n: int) -> torch.Tensor:
        cut = math.floor(self.config.trim * n)
        return block[cut : n - cut].mean(dim=0)
