"""Bulyan (El Mhamdi et al., 2018): repeated Krum picks, then a coordinate-wise trimmed mean of the picks."""

from __future__ import annotations

from bdrun.federated.aggregators.base import (
    AGGREGATORS,
    Aggregation,
    Aggregator,
    RoundUpdates,
    coordinatewise,
    count_of,
    krum_scores,
    lowest,
    pairwise_sq_distances,
)
from bdrun.federated.aggregators.krum import KrumConfig


@AGGREGATORS.register("bulyan", KrumConfig)
class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al., 2018): pick n - 2f clients by repeated Krum (each pick leaves the pool), then a
    coordinate-wise mean of the picked updates without the f smallest and f largest values per coordinate (the
    usual form of its "beta closest to the median" step; with n - 2f picks it keeps n - 4f values)."""

    config: KrumConfig

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        n = len(r.clients)
        f = count_of(self.config.byzantine, n)
        picks = max(1, n - 2 * f)
        cut = min(f, (picks - 1) // 2)
        distances = pairwise_sq_distances(r.updates)
        pool, picked = list(range(n)), []
        while len(picked) < picks:
            scores = krum_scores(distances[pool][:, pool], f)
            picked.append(pool.pop(lowest(scores, 1)[0]))
        chosen = r.updates[sorted(picked)]
        update = coordinatewise(chosen, lambda block: block[cut : picks - cut].mean(dim=0))
        return Aggregation(update, [c for row, c in enumerate(r.clients) if row not in picked])
