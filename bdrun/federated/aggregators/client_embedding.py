"""Client embeddings (Zhang, Zhou, Meng, Zhou and Sun, Findings of EMNLP 2024, pp. 5889-5896): the Krum family's
selection on distances between what the clients' models do, not between their parameter updates.

Our reading (the paper's full text could not be read here; see :mod:`bdrun.federated.aggregators.dim_krum` for
the sources searched): a client's embedding is its updated model's behaviour on a fixed server-side probe set
(:mod:`bdrun.federated.embeddings`); ``client_embedding`` runs the Krum / Multi-Krum / Dim-Krum selection on
distances between embeddings instead of between parameter updates, then averages the selected parameter
updates.
"""

from __future__ import annotations

import dataclasses

import torch

from bdrun.errors import BdrunError, check
from bdrun.federated.aggregators.base import AGGREGATORS, RoundUpdates, dim_distances, pairwise_sq_distances
from bdrun.federated.aggregators.dim_krum import DimKrumConfig
from bdrun.federated.aggregators.krum import KrumFamily

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
