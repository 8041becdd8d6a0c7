"""What a round's client updates look like to the distance-based aggregators: the regime of a federated backdoor.

The Dim-Krum paper's argument (Zhang et al., Findings of EMNLP 2022) is that an NLP backdoor update has a small
*relative backdoor strength*: in whole-vector distance it sits inside the honest clients' spread, so Krum keeps
it, while on the few coordinates only the attacker moves (a rare trigger word's embedding row) it is far out.
Whether a given setting is that regime, or the easy one where the attacker is an L2 outlier, is a property of
the updates themselves, so every round records, per client and for every aggregator (FedAvg included):

``l2_score``
    Krum's score: the sum of the client's squared whole-vector distances to its n - f - 2 nearest others
    (:func:`bdrun.federated.aggregators.krum_scores` on :func:`~bdrun.federated.aggregators.pairwise_sq_distances`).
``dim_score``
    Dim-Krum's score without memory: the same sum over Dim-Krum distances, each pair's distance being the sum of
    its ``ceil(rho * D)`` largest squared coordinate gaps (what Dim-Krum ranks clients by in that round).
``selected_strength``
    The client's mean absolute update on the round's selected coordinates: the ``ceil(rho * D)`` coordinates
    with the widest range over the round's clients. Dim-Krum selects dimensions per pair, so there is no single
    selected set; the widest-range coordinates are where every pair's largest gaps can lie (a pair's gap at a
    coordinate is at most its range), and they are the same for every client, so the strengths compare.

``f`` and ``rho`` are the aggregator's own when it has them (``defense.byzantine``; ``defense.rho`` of
``dim_krum``), otherwise Dim-Krum's defaults, so a FedAvg federation shows what Krum and Dim-Krum would see.
These numbers are measurements: they never change what the federation computes.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from bdrun.federated.aggregators import (
    AggregatorConfig,
    ClientEmbeddingConfig,
    DimKrumConfig,
    coordinate_range,
    count_of,
    dim_distances,
    krum_scores,
    pairwise_sq_distances,
)

SCORES = ("l2_score", "dim_score", "selected_strength")
DEFAULTS = DimKrumConfig(name="dim_krum")  # f and rho for aggregators without their own


def diagnostic_knobs(config: AggregatorConfig) -> tuple[float, float]:
    """(byzantine, rho) for the diagnostics of a federation run with ``config``. Client embeddings' ``rho`` is a
    fraction of embedding dimensions, not of parameters, so it is not used here."""
    byzantine = getattr(config, "byzantine", DEFAULTS.byzantine)
    own_rho = isinstance(config, DimKrumConfig) and not isinstance(config, ClientEmbeddingConfig)
    return byzantine, config.rho if own_rho else DEFAULTS.rho


def selected_columns(updates: torch.Tensor, rho: float) -> torch.Tensor:
    """Indices of the ``ceil(rho * D)`` coordinates with the widest range over the round's clients."""
    k = max(1, math.ceil(rho * updates.shape[1]))
    return coordinate_range(updates).topk(min(k, updates.shape[1]), sorted=False).indices


def round_diagnostics(updates: torch.Tensor, byzantine: float, rho: float) -> dict[str, list[float]]:
    """Per row of ``updates`` (N, D): Krum's L2 score, Dim-Krum's score and the selected-coordinate strength."""
    f = count_of(byzantine, updates.shape[0])
    columns = selected_columns(updates, rho)
    return {
        "l2_score": krum_scores(pairwise_sq_distances(updates), f).tolist(),
        "dim_score": krum_scores(dim_distances(updates, rho), f).tolist(),
        "selected_strength": updates[:, columns].abs().mean(dim=1).tolist(),
    }


def tracker_point(record: dict[str, Any], role: str) -> dict[str, float]:
    """One round's diagnostics as tracker scalars: per score, the malicious clients' mean and the honest
    clients' min, median and max (enough to see whether the attacker is inside the honest spread)."""
    if "l2_score" not in record:  # a federation cached before the diagnostics existed
        return {}
    malicious = set(record["malicious"])
    point: dict[str, float] = {}
    for score in SCORES:
        values = dict(zip(record["clients"], record[score], strict=True))
        bad = [v for c, v in values.items() if c in malicious]
        good = [v for c, v in values.items() if c not in malicious]
        if bad:
            point[f"rounds/{role}/{score}/malicious"] = statistics.fmean(bad)
        if good:
            point[f"rounds/{role}/{score}/honest_min"] = min(good)
            point[f"rounds/{role}/{score}/honest_median"] = statistics.median(good)
            point[f"rounds/{role}/{score}/honest_max"] = max(good)
    return point


def regime_counts(rounds: list[dict[str, Any]]) -> dict[str, int]:
    """Over a federation's malicious client-rounds: how many sat inside the honest spread in Krum's L2 score
    (at most the honest maximum) and how many above it in the selected-coordinate strength. The paper's regime
    is both counts near ``malicious``; a boosted attacker has ``inside_l2`` near 0."""
    counts = {"malicious": 0, "inside_l2": 0, "outside_selected": 0}
    for record in rounds:
        if "l2_score" not in record:
            continue
        bad = set(record["malicious"])
        honest = [i for i, c in enumerate(record["clients"]) if c not in bad]
        if not honest:
            continue
        l2_max = max(record["l2_score"][i] for i in honest)
        strength_max = max(record["selected_strength"][i] for i in honest)
        for row, client in enumerate(record["clients"]):
            if client in bad:
                counts["malicious"] += 1
                counts["inside_l2"] += record["l2_score"][row] <= l2_max
                counts["outside_selected"] += record["selected_strength"][row] > strength_max
    return counts
