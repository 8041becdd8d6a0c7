"""What every aggregator shares: the registry, a round's updates, the aggregate, and the distance helpers.

Every aggregator receives a round's client updates as ONE ``(N, D)`` float tensor (row i = client i's flattened
parameter change against the global model; never N model copies) and returns an :class:`Aggregation`: the
aggregate update ``(D,)`` and the clients it dropped, from which the federation computes detection precision and
recall. Coordinate-wise rules (median, trimmed mean) drop no client; selection rules (Krum family) drop every
client they do not select.

Knob conventions shared by the Krum family: ``byzantine`` is f, the number of a round's clients assumed
malicious, and ``keep`` is how many clients are averaged; both read a value below 1 as a fraction of the
round's clients (rounded down) and a value of 1 or more as a count.

The distance helpers live here rather than beside one rule because several rules and the per-client
diagnostics (:mod:`bdrun.federated.diagnostics`) read them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from bdrun.registry import Registry

AGGREGATORS: Registry = Registry("defense")  # reached from the command line as defense=<aggregator>
CHUNK = 1 << 21  # columns processed at a time by coordinate-wise rules, to bound temporary memory


@dataclasses.dataclass
class RoundUpdates:
    """What the server holds after one round of local training."""

    updates: torch.Tensor  # (N, D) float32: client parameter minus global parameter, one row per client
    clients: list[int]  # the global client id of each row (the memory's key)
    weights: torch.Tensor  # (N,) local sample counts (FedAvg weights)
    round: int = 0
    seed: int = 0
    embeddings: torch.Tensor | None = None  # (N, E), only for aggregators with needs_embeddings

    def __post_init__(self) -> None:
        if self.updates.ndim != 2 or self.updates.shape[0] != len(self.clients):
            raise ValueError("updates must be (N, D) with one row per client id")


@dataclasses.dataclass
class Aggregation:
    update: torch.Tensor  # (D,)
    dropped: list[int]  # client ids left out of the aggregate
    scores: dict[int, float] = dataclasses.field(default_factory=dict)  # selection score per client, if any


def count_of(value: float, n: int) -> int:
    """Values below 1 are a fraction of ``n`` (rounded down), values of 1 or more a count."""
    return math.floor(value * n) if value < 1 else int(value)


@dataclasses.dataclass
class AggregatorConfig:
    name: str


class Aggregator:
    needs_embeddings = False

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config

    def aggregate(self, round_updates: RoundUpdates) -> Aggregation:
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-able state carried across rounds (Dim-Krum's memory); saved with each round's checkpoint."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


class CoordinateRule(Aggregator):
    """A coordinate-wise rule (median, trimmed mean): each coordinate of the aggregate comes from that
    coordinate's client values alone, sorted; no client is dropped as a whole."""

    def reduce(self, block: torch.Tensor, n: int) -> torch.Tensor:
        """The aggregate of a column chunk whose ``n`` rows are the clients' values sorted per coordinate."""
        raise NotImplementedError

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        n = r.updates.shape[0]
        return Aggregation(coordinatewise(r.updates, lambda block: self.reduce(block, n)), dropped=[])


# -- distances and selection ------------------------------------------------------------------------------------
def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(N, N) squared Euclidean distances between rows: ``|a|^2 + |b|^2 - 2 a.b`` from a float64 Gram matrix
    accumulated over column chunks (one pass over the updates instead of one per pair)."""
    gram = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[1], CHUNK):
        block = x[:, start : start + CHUNK].double()
        gram += block @ block.T
    norms = gram.diagonal()
    return (norms[:, None] + norms[None, :] - 2 * gram).clamp_(min=0).fill_diagonal_(0)


def coordinate_range(x: torch.Tensor) -> torch.Tensor:
    """Per coordinate, the largest minus the smallest client value: an upper bound on any pair's gap there."""
    return torch.cat([b.amax(dim=0) - b.amin(dim=0) for b in x.split(CHUNK, dim=1)])


def _pair_top_sum(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """The sum of the k largest squared gaps between ``a`` and ``b``, exact.

    A threshold from a strided sample of the gaps keeps only a few times k candidates; when at least k gaps
    pass it, the top k are among them (a plain top-k over millions of entries is several times slower)."""
    gaps = (a - b).pow_(2)
    d = gaps.numel()
    if 8 * k < d:
        sample = gaps[:: max(1, d // 200_000)]
        threshold = sample.kthvalue(max(1, int(sample.numel() * (1 - 4 * k / d)))).values
        candidates = gaps[gaps >= threshold]
        if candidates.numel() >= k:
            gaps = candidates
    return float(gaps.topk(k, sorted=False).values.double().sum())


def dim_distances(x: torch.Tensor, rho: float) -> torch.Tensor:
    """(N, N) Dim-Krum distances: per pair, the sum of the ``ceil(rho * D)`` largest squared coordinate gaps.

    Exact, computed on candidate columns first: a pair's gap at a coordinate is at most that coordinate's range
    over all clients, so a pair whose k-th largest squared gap among the 8k widest-range columns is at least the
    squared range of every column left out is done; only the other pairs are computed over all D columns. This
    usually replaces N^2/2 passes over D by one.
    """
    n, d = x.shape
    k = max(1, math.ceil(rho * d))
    out = torch.zeros(n, n, dtype=torch.float64)
    if n < 2:
        return out
    widest = coordinate_range(x).topk(min(d, 8 * k), sorted=False)
    bound = float(widest.values.min()) ** 2  # no column left out has a larger squared range
    sub = x[:, widest.indices]
    for i in range(n):
        for j in range(i + 1, n):
            top = (sub[i] - sub[j]).pow_(2).topk(k, sorted=False).values
            if sub.shape[1] == d or float(top.min()) >= bound:
                out[i, j] = out[j, i] = top.double().sum()
            else:
                out[i, j] = out[j, i] = _pair_top_sum(x[i], x[j], k)
    return out


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum score per client: the sum of its distances to its n - f - 2 nearest other clients.

    With too few clients for n - f - 2 >= 1 the nearest single neighbour is used (our choice; Krum's guarantee
    needs n > 2f + 2).
    """
    n = distances.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    neighbours = min(max(1, n - f - 2), n - 1)
    others = distances + torch.diag(torch.full((n,), float("inf"), dtype=torch.float64))
    return others.sort(dim=1).values[:, :neighbours].sum(dim=1)


def lowest(scores: torch.Tensor, keep: int) -> list[int]:
    """Row indices of the ``keep`` lowest scores (ties broken by row order)."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:keep])


def coordinatewise(x: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``reduce(sorted_block)`` to column chunks of the coordinate-wise sorted updates (rows = clients).

    Each chunk is sorted transposed (a contiguous row of N values per coordinate), which is several times faster
    than sorting along the client axis of a wide (N, D) block."""
    parts = [reduce(x[:, s : s + CHUNK].T.contiguous().sort(dim=1).values.T) for s in range(0, x.shape[1], CHUNK)]
    return torch.cat(parts) if parts else torch.empty(0)


def spread(x: torch.Tensor) -> torch.Tensor:
    """Per-coordinate population standard deviation of the client updates."""
    return torch.cat([x[:, s : s + CHUNK].std(dim=0, correction=0) for s in range(0, x.shape[1], CHUNK)])
