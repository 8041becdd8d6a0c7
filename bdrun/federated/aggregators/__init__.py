"""Server-side aggregators of simulated federated learning, one module per rule; importing this package
registers every one in :data:`AGGREGATORS` (and :mod:`bdrun.federated.defense` registers each as a defense).

The shared pieces (the registry, :class:`RoundUpdates`, :class:`Aggregation`, the distance and selection helpers
and the knob conventions) are in :mod:`bdrun.federated.aggregators.base`, which every rule's module imports, so
that no rule imports this package back. The names below are re-exported so that imports written before the
split (``from bdrun.federated.aggregators import krum_scores``) keep working; a test that changes ``CHUNK``
patches it in ``base``, where the helpers read it.
"""

from bdrun.federated.aggregators.base import (
    AGGREGATORS,
    Aggregation,
    Aggregator,
    AggregatorConfig,
    RoundUpdates,
    coordinate_range,
    count_of,
    dim_distances,
    krum_scores,
    pairwise_sq_distances,
)
from bdrun.federated.aggregators.bulyan import Bulyan
from bdrun.federated.aggregators.client_embedding import ClientEmbedding, ClientEmbeddingConfig
from bdrun.federated.aggregators.dim_krum import DimKrum, DimKrumConfig
from bdrun.federated.aggregators.fedavg import FedAvg, FedAvgConfig
from bdrun.federated.aggregators.krum import Krum, KrumConfig
from bdrun.federated.aggregators.median import Median
from bdrun.federated.aggregators.multi_krum import MultiKrum, MultiKrumConfig
from bdrun.federated.aggregators.trimmed_mean import TrimmedMean, TrimmedMeanConfig

__all__ = [
    "AGGREGATORS",
    "Aggregation",
    "Aggregator",
    "AggregatorConfig",
    "Bulyan",
    "ClientEmbedding",
    "ClientEmbeddingConfig",
    "DimKrum",
    "DimKrumConfig",
    "FedAvg",
    "FedAvgConfig",
    "Krum",
    "KrumConfig",
    "Median",
    "MultiKrum",
    "MultiKrumConfig",
    "RoundUpdates",
    "TrimmedMean",
    "TrimmedMeanConfig",
    "coordinate_range",
    "count_of",
    "dim_distances",
    "krum_scores",
    "pairwise_sq_distances",
]
