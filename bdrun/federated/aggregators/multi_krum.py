"""Multi-Krum (Blanchard et al., 2017): Krum's scores, averaging the ``keep`` lowest-scoring clients."""

from __future__ import annotations

import dataclasses

from bdrun.errors import check
from bdrun.federated.aggregators.base import AGGREGATORS
from bdrun.federated.aggregators.krum import KrumConfig, KrumFamily


@dataclasses.dataclass
class MultiKrumConfig(KrumConfig):
    keep: float | None = None  # clients averaged (< 1: fraction, >= 1: count); null: n - f

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.keep is None or self.keep > 0, f"defense.keep={self.keep} must be positive (or null for n - f)")


@AGGREGATORS.register("multi_krum", MultiKrumConfig)
class MultiKrum(KrumFamily):
    """Multi-Krum: the mean of the ``keep`` (default n - f) lowest-scoring clients."""
