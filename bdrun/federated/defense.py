"""Every aggregator is also a defense (``defense=krum``): the defense of the federated setting.

It ``aggregates``: the federated stages run a whole federation with it as the server's rule
(:mod:`bdrun.federated.stages`); central training rejects it with a one-line hint.
"""

from __future__ import annotations

from bdrun.defenses.defense import Defense
from bdrun.defenses.registry import DEFENSES
from bdrun.federated.aggregators import AGGREGATORS, AggregatorConfig


class AggregatorDefense(Defense):
    kind = "aggregator"
    aggregates = True

    def __init__(self, config: AggregatorConfig) -> None:
        super().__init__(config)
        self.aggregator = AGGREGATORS.entry(config.name).factory(config)


for _name in AGGREGATORS.names():
    DEFENSES.register(_name, AGGREGATORS.entry(_name).schema)(AggregatorDefense)
