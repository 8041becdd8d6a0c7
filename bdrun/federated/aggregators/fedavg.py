"""FedAvg (McMahan et al., 2017): the mean of every client's update, no defense; the federated baseline."""

from __future__ import annotations

import dataclasses

import torch

from bdrun.federated.aggregators.base import AGGREGATORS, Aggregation, Aggregator, AggregatorConfig, RoundUpdates


@dataclasses.dataclass
class FedAvgConfig(AggregatorConfig):
    weighted: bool = True  # weight clients by their local sample counts (McMahan et al.); false: plain mean


@AGGREGATORS.register("fedavg", FedAvgConfig)
class FedAvg(Aggregator):
    config: FedAvgConfig

    def aggregate(self, r: RoundUpdates) -> Aggregation:
        weights = r.weights.double() if self.config.weighted else torch.ones(len(r.clients), dtype=torch.float64)
        weights = (weights / weights.sum()).to(r.updates.dtype)
        return Aggregation(weights @ r.updates, dropped=[])
