"""The settings a run takes place in (central training, federated learning), registered by name.

A setting decides how each of the run's models is made (one training, or a federation of clients), while the
run itself (:func:`bdrun.pipeline.run`) is the same for all: it builds the experiment's setting from
:data:`SETTINGS` and calls the five methods of :class:`Setting`, knowing nothing else about it. The experiment
names its setting (:attr:`bdrun.experiment.Experiment.setting`: ``federated`` for any ``federated=`` config but
``none``). A new setting is a class with that interface, built from ``(experiment, splits)``, and one entry
here.

- ``central``: :class:`bdrun.stages.Stages`, one model per stage, trained or edited on this machine;
- ``federated``: :class:`bdrun.federated.stages.FederatedStages`, one federation per stage (the clean, the
  FedAvg-backdoored and the aggregator-defended one); any other defense applies to the global model as in
  central training.

The federated class extends the central one (it shares the keys of the run's other parts, loading, saving and
evaluation); the registry, not the subclassing, is what the run sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bdrun.cache import Artifact
from bdrun.data import Splits
from bdrun.experiment import Experiment
from bdrun.federated.stages import FederatedStages
from bdrun.stages import Stages
from bdrun.tracking import Tracker


class Setting(Protocol):
    """What the run needs of a setting: the tokenizer and one method per stage, each returning its (cached)
    artifact, plus the setting's own additions to the report."""

    tokenizer: Any

    def train_clean(self) -> Artifact:
        """The clean model."""

    def poison(self, clean: Artifact | None) -> Artifact:
        """The backdoored model (``clean`` itself under attack=none; None with clean=false and a data attack)."""

    def purify(self, suspect: Artifact) -> Artifact:
        """The purified model, or a fitted detector (``suspect`` itself when the defense does nothing here)."""

    def evaluate(self, model: Artifact, role: str, detector: Artifact | None = None) -> Artifact:
        """The metrics and clean test predictions of a model, or of the model behind a fitted detector."""

    def extend_report(self, report: dict[str, Any], models: dict[str, Artifact], tracker: Tracker) -> None:
        """Add the setting's own results to ``report`` and the tracker (the federated rounds)."""


SETTINGS: dict[str, Callable[[Experiment, Splits], Setting]] = {"central": Stages, "federated": FederatedStages}


def make_stages(exp: Experiment, splits: Splits) -> Setting:
    """The experiment's setting, ready to build its stages (a federated one checks its memory here)."""
    return SETTINGS[exp.setting](exp, splits)
