"""Dim-Krum (Zhang, Su and Sun, Findings of EMNLP 2022, arXiv 2210.06894): Krum on a few dimensions per pair.

Dim-Krum and client embeddings (:mod:`bdrun.federated.aggregators.client_embedding`; Zhang, Zhou, Meng, Zhou
and Sun, Findings of EMNLP 2024, pp. 5889-5896) have no public code, and their full texts could not be read here
(searched again for issue 23: stored web pages, documentation, code and issue threads hold the abstracts, the
ACL Anthology and arXiv landing pages and third-party summaries, not the papers' bodies; no repository
implements either). What those sources say: the probability that a malicious update is detected is governed by
its *relative backdoor strength*, small for NLP backdoors, so whole-vector distances miss them; Dim-Krum
computes Krum distances "on a selected fraction of dimensions with higher backdoor strengths", adds a memory
"to enhance the accuracy of distance-sum estimations over multiple rounds" and an adaptive noise on the
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

What Krum and Dim-Krum see of every round's updates is logged per client for every aggregator
(:mod:`bdrun.federated.diagnostics`).
"""

from __future__ import annotations

import dataclasses

import torch

from bdrun.errors import check
from bdrun.federated.aggregators.base import AGGREGATORS, RoundUpdates, dim_distances
from bdrun.federated.aggregators.krum import KrumFamily
from bdrun.federated.aggregators.multi_krum import MultiKrumConfig


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


@AGGREGATORS.register("dim_krum", DimKrumConfig)
class DimKrum(KrumFamily):
    """Dim-Krum (our reading, see the module docstring): Krum on the top-rho dimensions of each pair's gaps."""

    config: DimKrumConfig

    def distances(self, r: RoundUpdates) -> torch.Tensor:
        return dim_distances(r.updates, self.config.rho)
