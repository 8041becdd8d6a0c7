"""The federated setting's stages (``federated`` in :mod:`bdrun.settings`): the pipeline's three roles, each a
federation, cached like every stage.

========== =========================================================== ===============================
role       federation                                                  cache stage / key adds
========== =========================================================== ===============================
clean      every client honest, FedAvg                                 train: the setting (no malicious)
backdoored malicious clients train on poisoned shards, FedAvg          poison: the setting + attack
purified   malicious clients, the aggregator under test (``defense``)  purify: the above + aggregator
========== =========================================================== ===============================

So ``bdrun -m federated=iid defense=fedavg,krum,median,dim_krum`` trains the clean and the FedAvg-backdoored
federations once, and one federation per aggregator (``defense=fedavg`` with default knobs *is* the
backdoored federation and reuses it). A purified federation does not start from the backdoored model: the
aggregator defends during training, from the same initial model. Any other defense (``fine_tuning``, ``dan``,
...) applies to the FedAvg-backdoored global model exactly as in central training.

The clean key leaves out the malicious clients' knobs (``federated.malicious``, ``malicious_scale`` and the other
``malicious_*`` levers: it has no malicious clients), so sweeping them reuses the clean federation. The per-round
curves of the clean federation hold CACC only: its key does not depend on the attack, so an ASR in it could be
read back under another attack's name. Later knobs at their default stay out of every key
(:meth:`~bdrun.federated.setting.FederatedConfig.key_fields`), so federations cached before them are reused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bdrun.attacks import DataPoisoningAttack
from bdrun.cache import Artifact, stage_key
from bdrun.errors import check
from bdrun.federated.aggregators import AGGREGATORS, Aggregator, FedAvgConfig
from bdrun.federated.diagnostics import tracker_point
from bdrun.federated.federation import Federation, run_federation
from bdrun.federated.memory import check_updates_fit, trainable_count
from bdrun.federated.setting import MALICIOUS_KNOBS
from bdrun.stages import Stages
from bdrun.tracking import Tracker

FEDAVG = FedAvgConfig(name="fedavg")
ROUND_METRICS = ("cacc", "asr", "precision", "recall")


class FederatedStages(Stages):
    def __init__(self, exp, splits) -> None:
        super().__init__(exp, splits)
        check(
            not exp.attack.needs_clean_model,
            f"attack={exp.attack.config.name} edits a trained model; federated runs take data-poisoning attacks "
            "(badnets, addsent, ...)",
        )
        self.setting = exp.federated.key_fields()
        # Before any stage: a round's updates must fit in memory (one line naming the numbers otherwise).
        per_round = exp.federated.per_round
        knob = "federated.clients_per_round" if per_round < exp.federated.clients else "federated.clients"
        check_updates_fit(per_round, trainable_count(self.pretrained()), knob)

    # -- what each role runs ----------------------------------------------------------------------------------
    @property
    def poisoning(self) -> DataPoisoningAttack | None:
        return self.exp.attack if self.exp.attack.poisons_training_data else None

    def federation(self, aggregator: Aggregator, malicious: bool) -> Federation:
        attack = self.poisoning if malicious else None
        return Federation(self.exp.federated, aggregator, attack=attack, eval_attack=attack)

    def defends_in_training(self) -> bool:
        """True when the defense is an aggregator other than plain FedAvg (which is the backdoored federation)."""
        config = self.exp.defense.config
        return self.exp.defense.aggregates and dataclasses.asdict(config) != dataclasses.asdict(FEDAVG)

    # -- keys ---------------------------------------------------------------------------------------------------
    def train_key(self) -> str:
        honest = {k: v for k, v in self.setting.items() if k not in MALICIOUS_KNOBS}
        return stage_key("train", **self.base, **self.training, federated=honest)

    def poison_key(self, clean_key: str | None) -> str:
        attack = dataclasses.asdict(self.exp.attack.config)  # no clean_key: the federation starts pre-trained
        return stage_key("poison", **self.base, **self.training, federated=self.setting, attack=attack)

    def purify_key(self, suspect_key: str) -> str:
        if not self.exp.defense.aggregates:
            return super().purify_key(suspect_key)
        attack = dataclasses.asdict(self.exp.attack.config) if self.poisoning else None
        return stage_key(
            "purify",
            **self.base,
            **self.training,
            federated=self.setting,
            attack=attack,
            aggregator=dataclasses.asdict(self.exp.defense.config),
            revision=self.exp.defense.revision,
        )

    # -- stages -------------------------------------------------------------------------------------------------
    def _federated_stage(self, stage: str, key: str, fed: Federation, label: str) -> Artifact:
        def build(out, work) -> dict[str, Any]:
            model = self.pretrained()
            diagnostics = run_federation(model, self.splits, fed, self.context(work), desc=stage)
            self.save(model, out)  # a PET federation stores only its trained tensors
            return {"federation": diagnostics, "poisoned_samples": diagnostics["poisoned_samples"]}

        cfg = self.exp.federated
        where = f"{cfg.clients} clients, {cfg.rounds} rounds"
        return self.cache.get_or_build(stage, key, build, f"{stage}: {label} federation ({where})")

    def train_clean(self) -> Artifact:
        fed = self.federation(AGGREGATORS.build({"name": "fedavg"}), malicious=False)
        return self._federated_stage("train", self.train_key(), fed, "clean FedAvg")

    def poison(self, clean: Artifact | None) -> Artifact:
        """The FedAvg federation with malicious clients; ``clean`` (None with clean=false) enters neither the
        federation nor its key: every federation starts from the pre-trained model."""
        if self.poisoning is None:
            return clean
        fed = self.federation(AGGREGATORS.build({"name": "fedavg"}), malicious=True)
        label = f"attack={self.exp.attack.config.name} FedAvg"
        return self._federated_stage("poison", self.poison_key(None), fed, label)

    def purify(self, suspect: Artifact) -> Artifact:
        defense = self.exp.defense
        if not defense.aggregates:  # a defense of the trained global model, as in central training
            return super().purify(suspect)
        if not self.defends_in_training():
            return suspect
        fed = self.federation(defense.aggregator, malicious=True)
        label = f"defense={defense.config.name}"
        return self._federated_stage("purify", self.purify_key(suspect.key), fed, label)

    # -- report ---------------------------------------------------------------------------------------------------
    def extend_report(self, report: dict[str, Any], models: dict[str, Artifact], tracker: Tracker) -> None:
        """Add each federation's rounds and detection to the report; log the per-round curves and the regime
        diagnostics (malicious against honest clients in Krum's and Dim-Krum's scores) to the tracker."""
        federations = {}
        for role, artifact in models.items():
            meta = artifact.meta().get("federation")
            if meta is None:
                continue
            federations[role] = meta
            for metric in ("detection_precision", "detection_recall"):
                if metric in meta and role in report:
                    report[role][metric] = meta[metric]
        report["federation"] = federations
        for index in range(self.exp.federated.rounds):
            point: dict[str, Any] = {"round": index + 1}
            for role, meta in federations.items():
                if index < len(meta["rounds"]):
                    row = meta["rounds"][index]
                    point.update({f"rounds/{role}/{m}": row[m] for m in ROUND_METRICS if m in row})
                    point.update(tracker_point(row, role))
            if len(point) > 1:
                tracker.log(point)
