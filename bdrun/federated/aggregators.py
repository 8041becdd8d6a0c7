"""Server-side aggregators of simulated federated learning: one registered component family.

Every aggregator receives a round's client updates as ONE ``(N, D)`` float tensor (row i = client i's flattened
parameter change against the global model; never N model copies) and returns an :class:`Aggregation`: the
aggregate update ``(D,)`` and the clients it dropped, from which the federation computes detection precision and
recall. Coordinate-wise rules (median, trimmed mean) drop no client; selection rules (Krum family) drop every
client they do not select.

Knob conventions shared by the Krum family: ``byzantine`` is f, the number of a round's clients assumed
malicious, and ``keep`` is how many clients are averaged; both read a value below 1 as a fraction of the
round's clients (rounded down) and a value of 1 or more as a count.

Dim-Krum (Zhang, Su and Sun, Findings of EMNLP 2022, arXiv 2210.06894) and client embeddings (Zhang, Zhou,
Meng, Zhou and Sun, Findings of EMNLP 2024, pp. 5889-5896) have no public code, and their full texts could not
be read here (searched again for issue 23: stored web pages, documentation, code and issue threads hold the
abstracts, the ACL Anthology and arXiv landing pages and third-party summaries, not the papers' bodies; no
repository implements either). What those sources say: the probability that a malicious update is detected is
governed by its *relative backdoor strength*, small for NLP backdoors, so whole-vector distances miss them;
Dim-Krum computes Krum distances "on a selected fraction of dimensions with higher backdoor strengths", adds a
memory "to enhance the accuracy of distance-sum estimations over multiple rounds" and an adaptive noise on the
aggregate; the paper studies memory and noise separately. The same first author's Fed-FA (NeurIPS 2023)
replaces parameter distances by an f-divergence indicator of client data divergence estimated from updates and
Hessians (with synthesized data): related motivation, not Dim-Krum's machinery. Everything below that is not in
those sentences is our reading (``shared/METHODS.md``), each uncertain part a knob:

* Which dimensions, and per what: per client PAIR, the ``ceil(rho * D)`` largest per-coordinate squared
  differences of their updates (not one global set of dimensions; our choice, as a pair's own gaps are where it
  differs). Krum score = sum of the n - f - 2 nearest such distances; the lowest scores are selected, one client
  (``keep: 1``, Krum-style) or n - f (``keep: null``). ``rho`` default 1e-3 (our choice).
* Memory (``memory`` = gamma, 0 switches it off): a client's score is the gamma-discounted average of its
  scores in the rounds it took part in, ``(gamma * num + S) / (gamma * den + 1)``. With every client sampled
  each round this ranks exactly like an accumulated sum ``S_t + gamma * S_{t-1}``; the averaging (our choice)
  keeps a client sampled for the first time comparable with one that has a history. gamma 0.9 (our choice).
* Adaptive noise (``noise`` = lambda, 0 switches it off): Gaussian noise with per-coordinate standard deviation
  lambda * sigma, sigma the spread (population std) of that coordinate over the round's client updates, added
  to the aggregate; seeded by (seed, round). "Adaptive" read as: scaled per coordinate by the clients' spread.
  lambda is off by default; ``defense=dim_krum_full`` (the paper presets) turns it on at 0.5 (our choice).
* Client embeddings: a client's embedding is its updated model's behaviour on a fixed server-side probe set
  (:mod:`bdrun.federated.embeddings`); ``client_embedding`` runs the Krum / Multi-Krum / Dim-Krum selection on
  distances between embeddings instead of between parameter updates, then averages the selected parameter
  updates.

What Krum and Dim-Krum see of every round's updates is logged per client for every aggregator
(:mod:`bdrun.federated.diagnostics`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from bdrun.errors import BdrunError, check
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


# -- configs --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AggregatorConfig:
    name: str


@dataclasses.dataclass
class FedAvgConfig(AggregatorConfig):
    weighted: bool = True  # weight clients by their local sample counts (McMahan et al.); false: plain mean


@dataclasses.dataclass
class TrimmedMeanConfig(AggregatorConfig):
    trim: float = 0.1  # per coordinate, drop this fraction of the values at each end (floor(trim * n) each)

    def __post_init__(self) -> None:
        check(0 <= self.trim < 0.5, f"defense.trim={self.trim} must be in [0, 0.5), e.g. 0.1")


@dataclasses.dataclass
class KrumConfig(AggregatorConfig):
    byzantine: float = 0.2  # f: assumed malicious clients per round (< 1: fraction, >= 1: count)

    def __post_init__(self) -> None:
        check(self.byzantine >= 0, f"defense.byzantine={self.byzantine} must be >= 0 (a fraction or a count)")


@dataclasses.dataclass
class MultiKrumConfig(KrumConfig):
    keep: float | None = None  # clients averaged (< 1: fraction, >= 1: count); null: n - f

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.keep is None or self.keep > 0, f"defense.keep={self.keep} must be positive (or null for n - f)")


@dataclasses.dataclass
class DimKrumConfig(MultiKrumConfig):
    keep: float | None = 1  # Krum-style: one client by default
    rho: float = 1e-3  # fraction of the dimensions whose squared differences make a pair's distance
    memory: float = 0.9  # gamma of the score memory over rounds; 0 switches the memory off
    noise: float = 0.0  # lambda of the adaptive noise on the aggregate; 0 switches it off

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.rho <= 1, f"defense.rho={self.rho} must be a fraction in (0, 1], e.g. 0.001")
        check(0 <= self.memory < 1, f"defense.memory={self.memory} must be in [0, 1) (0 switches memory off)")
        check(self.noise >= 0, f"defense.noise={self.noise} must be >= 0 (0 switches the noise off)")


SELECTORS = ("krum", "multi_krum", "dim_krum")
FEATURES = ("probs", "hidden")


@dataclasses.dataclass
class ClientEmbeddingConfig(DimKrumConfig):
    selector: str = "multi_krum"  # the selection run on embedding distances: krum, multi_krum or dim_krum
    keep: float | None = None  # as multi_krum (null: n - f); krum always keeps 1
    rho: float = 0.1  # dim_krum only: fraction of the embedding's dimensions per distance
    memory: float = 0.0
    features: str = "probs"  # probs: softmax per probe input; hidden: mean-pooled last hidden state per input
    probe_size: int = 64  # server-side probe inputs, a seeded sample of the clean dev split

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.selector in SELECTORS, f"defense.selector={self.selector} must be one of {', '.join(SELECTORS)}")
        check(self.features in FEATURES, f"defense.features={self.features} must be one of {', '.join(FEATURES)}")
        check(self.probe_size >= 1, f"defense.probe_size={self.probe_size} must be at least 1")


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


def coordinatewise(x: torch.Tensor, reduce) -> torch.Tensor:
    """Apply ``reduce(sorted_block)`` to column chunks of the coordinate-wise sorted updates (rows = clients).

    Each chunk is sorted transposed (a contiguous row of N values per coordinate), which is several times faster
    than sorting along the client axis of a wide (N, D) block."""
    parts = [reduce(x[:, s : s + CHUNK].T.contiguous().sort(dim=1).values.T) for s in range(0, x.shape[1], CHUNK)]
    return torch.cat(parts) if parts else torch.empty(0)


def median_of_sorted(block: torch.Tensor) -> torch.Tensor:
    """numpy's median: the middle value, or the mean of the two middle values for an even count."""
    n = block.shape[0]
    if n % 2:
        return block[n // 2]
    return (block[n // 2 - 1] + block[n // 2]) / 2


def spread(x: torch.Tensor) -> torch.Tensor:
    """Per-coordinate population standard deviation of the client updates."""
    return torch.cat([x[:, s : s + CHUNK].std(dim=0, correction=0) for s in range(0, x.shape[1], CHUNK)])


# -- aggregators --------------------------------------------------------------------------------------------------
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


@AGGREGATORS.register("fedavg", FedAvgConfig)
class FedAvg(Aggregator):
    config: FedAvgConfig

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        weights = r.weights.double() if self.config.weighted else torch.ones(len(r.clients), dtype=torch.float64)
        weights = (weights / weights.sum()).to(r.updates.dtype)
        return Aggregation(weights @ r.updates, dropped=[])


@AGGREGATORS.register("median", AggregatorConfig)
class Median(Aggregator):
    """Coordinate-wise median (numpy's definition: the mean of the two middle values for an even count)."""

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        return Aggregation(coordinatewise(r.updates, median_of_sorted), dropped=[])


@AGGREGATORS.register("trimmed_mean", TrimmedMeanConfig)
class TrimmedMean(Aggregator):
    """Coordinate-wise mean after dropping the floor(trim * n) smallest and largest values (scipy's trim_mean)."""

    config: TrimmedMeanConfig

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        n = r.updates.shape[0]
        cut = math.floor(self.config.trim * n)
        return Aggregation(coordinatewise(r.updates, lambda block: block[cut : n - cut].mean(dim=0)), dropped=[])


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


@AGGREGATORS.register("multi_krum", MultiKrumConfig)
class MultiKrum(KrumFamily):
    """Multi-Krum: the mean of the ``keep`` (default n - f) lowest-scoring clients."""


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


@AGGREGATORS.register("dim_krum", DimKrumConfig)
class DimKrum(KrumFamily):
    """Dim-Krum (our reading, see the module docstring): Krum on the top-rho dimensions of each pair's gaps."""

    config: DimKrumConfig

    def distances(self, r: RoundUpdates) -> torch.Tensor:
        return dim_distances(r.updates, self.config.rho)


@AGGREGATORS.register("client_embedding", ClientEmbeddingConfig)
class ClientEmbedding(KrumFamily):
    """Krum / Multi-Krum / Dim-Krum selection on client-embedding distances, averaging parameter updates."""

    config: ClientEmbeddingConfig
    needs_embeddings = True

    def distances(self, r: RoundUpdates) -> torch.Tensor:
        if r.embeddings is None:
            raise BdrunError("defense=client_embedding needs client embeddings; run it under federated=<setting>")
        if self.config.selector == "dim_krum":
            return dim_distances(r.embeddings.float(), self.config.rho)
        return pairwise_sq_distances(r.embeddings)

    def keep(self, n: int, f: int) -> int:
        return 1 if self.config.selector == "krum" else super().keep(n, f)
