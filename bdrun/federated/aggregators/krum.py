"""Krum (Blanchard et al., 2017), and the Krum family's shared selection that Multi-Krum, Dim-Krum and client
embeddings build on (:class:`KrumFamily`: score on a distance matrix, keep the lowest, average)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from bdrun.errors import check
from bdrun.federated.aggregators.base import (
    AGGREGATORS,
    Aggregation,
    Aggregator,
    AggregatorConfig,
    RoundUpdates,
    count_of,
    krum_scores,
    lowest,
    pairwise_sq_distances,
    spread,
)


@dataclasses.dataclass
class KrumConfig(AggregatorConfig):
    byzantine: float = 0.2  # f: assumed malicious clients per round (< 1: fraction, >= 1: count)

    def __post_init__(self) -> None:
        check(self.byzantine >= 0, f"defense.byzantine={self.byzantine} must be >= 0 (a fraction or a count)")


class KrumFamily(Aggregator):
    """Score clients on a distance matrix, keep the lowest scores, average their parameter updates.

    Subclasses choose the distances (:meth:`distances`) and how many clients are kept (:meth:`keep`); memory and
    adaptive noise are read from the config when it has them, so Krum and Multi-Krum simply have neither.
    """

    config: KrumConfig

    def __init__(self, config: KrumConfig) -> None:
        super().__init__(config)
        self.memory: dict[str, list[float]] = {}  # client id -> [discounted score sum, discounted count]

    def distances(self, r: RoundUpdates) -> torch.Tensor:
        return pairwise_sq_distances(r.updates)

    def keep(self, n: int, f: int) -> int:
        keep = getattr(self.config, "keep", None)
        return n - f if keep is None else count_of(keep, n)

    def remembered(self, clients: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
        gamma = getattr(self.config, "memory", 0.0)
        if gamma == 0:
            return scores
        out = torch.empty_like(scores)
        for row, client in enumerate(clients):
            num, den = self.memory.get(str(client), [0.0, 0.0])
            num, den = gamma * num + float(scores[row]), gamma * den + 1.0
            self.memory[str(client)] = [num, den]
            out[row] = num / den
        return out

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        n = len(r.clients)
        f = count_of(self.config.byzantine, n)
        keep = max(1, min(n, self.keep(n, f)))
        scores = self.remembered(r.clients, krum_scores(self.distances(r), f))
        chosen = lowest(scores, keep)
        update = r.updates[chosen].mean(dim=0)
        noise = getattr(self.config, "noise", 0.0)
        if noise > 0:
            generator = torch.Generator().manual_seed(r.seed * 1_000_003 + r.round)
            update += noise * spread(r.updates) * torch.randn(update.shape, generator=generator)
        dropped = [c for row, c in enumerate(r.clients) if row not in chosen]
        return Aggregation(update, dropped, {c: float(scores[row]) for row, c in enumerate(r.clients)})

    def state(self) -> dict:
        return {"memory": self.memory}

    def load_state(self, state: dict) -> None:
        self.memory = {k: list(v) for k, v in state.get("memory", {}).items()}


@AGGREGATORS.register("krum", KrumConfig)
class Krum(KrumFamily):
    """Krum (Blanchard et al., 2017): the single client with the lowest score on whole-update distances."""

    def keep(self, n: int, f: int) -> int:
        return 1
