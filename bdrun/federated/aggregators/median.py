"""Coordinate-wise median (Yin et al., 2018): robust per coordinate, drops no client."""

from __future__ import annotations

import torch

from bdrun.federated.aggregators.base import AGGREGATORS, AggregatorConfig, CoordinateRule


def median_of_sorted(block: torch.Tensor) -> torch.Tensor:
    """numpy's median: the middle value, or the mean of the two middle values for an even count."""
    n = block.shape[0]
    if n % 2:
        return block[n // 2]
    return (block[n // 2 - 1] + block[n // 2]) / 2


@AGGREGATORS.register("median", AggregatorConfig)
class Median(CoordinateRule):
    """Coordinate-wise median (numpy's definition: the mean of the two middle values for an even count)."""

    def reduce(self, block: torch.Tensor, n: int) -> torch.Tensor:
        return median_of_sorted(block)
