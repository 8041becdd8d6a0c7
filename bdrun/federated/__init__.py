"""Simulated federated learning: robust aggregators (the defenses of this setting) and the federation itself.

Importing this package registers every aggregator in :data:`AGGREGATORS`. The federation loop and its pipeline
stages (:mod:`bdrun.federated.federation`, :mod:`bdrun.federated.stages`, the setting registered in
:mod:`bdrun.settings`) are imported on demand.
"""

from bdrun.federated.aggregators import AGGREGATORS, Aggregation, Aggregator, RoundUpdates
from bdrun.federated.setting import FederatedConfig

__all__ = ["AGGREGATORS", "Aggregation", "Aggregator", "FederatedConfig", "RoundUpdates"]
