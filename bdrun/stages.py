"""The central setting's stages: each builds (or reuses) one cached artifact, under a key made of exactly the
config that determines it (see :mod:`bdrun.pipeline` for the whole run and the key of each stage).

:class:`Stages` is registered as the ``central`` setting (:mod:`bdrun.settings`) and is the base that the
federated setting extends (:mod:`bdrun.federated.stages`). The stages ask the attack and the defense how to
build (:meth:`~bdrun.attacks.base.Attack.backdoor`, :meth:`~bdrun.defenses.defense.Defense.build`) rather than
switching on their kind.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from bdrun import pet
from bdrun.cache import Artifact, StageCache, stage_key
from bdrun.configs import CONF_DIR
from bdrun.context import StageContext
from bdrun.data import Splits
from bdrun.data.loading import load_named_train
from bdrun.errors import check
from bdrun.evaluation import evaluate_detector, evaluate_model
from bdrun.experiment import Experiment
from bdrun.models import load_pretrained, load_tokenizer, load_weights, save_weights
from bdrun.tracking import Tracker
from bdrun.training import TrainerConfig

WEIGHTS = "model.safetensors"


def training_fields(trainer: TrainerConfig) -> dict[str, Any]:
    """The trainer knobs that change trained weights (not eval batch size or checkpoint frequency).

    ``compile`` and ``tf32`` change only floating-point rounding, like the device (also not in the key), so a
    model trained with them is reused by a run without them. Bucketing changes the batches, so it is in the
    key, but only when on: keys written before the knob existed stay valid.
    """
    fields = dataclasses.asdict(trainer)
    for irrelevant in ("eval_batch_size", "checkpoint_every", "compile", "tf32"):
        fields.pop(irrelevant)
    if not trainer.bucketing:
        del fields["bucketing"], fields["bucket_batches"]
    return fields


class Stages:
    """Builds (or reuses) each stage's artifact for one experiment."""

    def __init__(self, exp: Experiment, splits: Splits) -> None:
        self.exp = exp
        self.splits = splits
        self.cache = StageCache(exp.cache_dir)
        self.tokenizer = load_tokenizer(exp.model)
        self._pretrained: torch.nn.Module | None = None
        # Models that train() built in this run, by (stage, key): the evaluation (and a defense) takes them from
        # memory instead of re-reading the weights just saved. Only training's output is kept: its weights are
        # all of it, whereas an editing method might leave state (hooks, flags) that its saved file does not
        # hold, and the run must evaluate exactly what the cache holds. At most two (clean, backdoored).
        self._trained: dict[tuple[str, str], torch.nn.Module] = {}
        model_fields = pet.key_fields(exp.model, dataclasses.asdict(exp.model))
        self.base = {"model": model_fields, "data": splits.fingerprint(), "seed": exp.seed}
        self.training = {"optimizer": dataclasses.asdict(exp.optimizer.config), "trainer": training_fields(exp.trainer)}
        self.poison_train, self.poison_base = splits.train, self.base
        source = exp.attack.poison_source
        if source is not None:  # the attacker poisons another dataset (attack.source)
            self.poison_train, num_labels = load_named_train(
                source, CONF_DIR, exp.data_dir, exp.attack.config.source_max_train
            )
            check(
                num_labels == splits.num_labels,
                f"attack.source={source} has {num_labels} labels but dataset={exp.dataset.name} has "
                f"{splits.num_labels}; pick a source with the same labels",
            )
            self.poison_base = {**self.base, "data": self.poison_train.fingerprint()}

    # -- models -----------------------------------------------------------------------------------------------
    def pretrained(self) -> torch.nn.Module:
        """A fresh copy of the pre-trained encoder with the run's seeded classification head."""
        if self._pretrained is None:
            self._pretrained = load_pretrained(self.exp.model, self.splits.num_labels, self.exp.seed)
        return copy.deepcopy(self._pretrained)

    def load(self, artifact: Artifact, *, shared: bool = False) -> torch.nn.Module:
        """The artifact's model, from memory when this run trained it. ``shared``: the caller only reads it
        (prediction), so the in-memory model itself may be returned rather than a copy."""
        trained = self._trained.get((artifact.stage, artifact.key))
        if trained is not None:
            return trained if shared else copy.deepcopy(trained)
        return load_weights(self.pretrained(), artifact.path / WEIGHTS)

    def save(self, model: torch.nn.Module, out: Path) -> None:
        """A PET stage stores only its trained (or otherwise changed) tensors, on top of the pre-trained model."""
        self.pretrained()  # builds the reference on first use
        base = self._pretrained if self.exp.model.tuning != "full" else None
        save_weights(model, out / WEIGHTS, base=base)

    def context(self, work_dir: Path) -> StageContext:
        exp = self.exp
        return StageContext(
            self.tokenizer, exp.model, exp.trainer, exp.optimizer, exp.device, exp.seed, work_dir, self.pretrained
        )

    # -- keys: exactly the config that determines each stage's output ------------------------------------------
    def train_key(self) -> str:
        return stage_key("train", **self.base, **self.training)

    def poison_key(self, clean_key: str | None) -> str:
        attack = self.exp.attack.config.key_fields()
        if self.exp.attack.needs_clean_model:  # edits the cached clean model
            return stage_key("poison", victim=clean_key, attack=attack)
        return stage_key("poison", **self.poison_base, **self.training, attack=attack)

    def purify_key(self, suspect_key: str) -> str:
        defense = dataclasses.asdict(self.exp.defense.config)
        if defense.get("optimizer", "set") is None:  # the run's optimizer, already in the key (self.training)
            del defense["optimizer"]
        if self.exp.defense.revision != 1:  # the first revision adds nothing, so its keys stay as they were
            defense["revision"] = self.exp.defense.revision
        return stage_key("purify", suspect=suspect_key, defense=defense, seed=self.exp.seed, **self.training)

    def evaluate_key(self, model_key: str) -> str:
        return stage_key(
            "evaluate",
            model=model_key,
            attack=self.exp.attack.config.key_fields(),
            test=self.splits.test.fingerprint(),
            seed=self.exp.seed,
            max_length=self.exp.model.max_length,
        )

    # -- stages -----------------------------------------------------------------------------------------------
    def train_clean(self) -> Artifact:
        def build(out: Path, work: Path) -> dict[str, Any]:
            model = self.pretrained()
            stats = self.context(work).train(model, self.splits.train, desc="train clean")
            self.save(model, out)
            self._trained["train", key] = model
            return {"train": stats}

        key = self.train_key()
        return self.cache.get_or_build("train", key, build, "train: clean fine-tuning")

    def poison(self, clean: Artifact | None) -> Artifact:
        """The backdoored model; ``clean`` (None with clean=false) is used only by an attack that needs it."""
        attack = self.exp.attack
        if not attack.backdoors:
            return clean

        def build(out: Path, work: Path) -> dict[str, Any]:
            model = self.load(clean) if attack.needs_clean_model else self.pretrained()
            meta = attack.backdoor(model, self.poison_train, self.splits, self.tokenizer, self.context(work))
            self.save(model, out)
            if attack.poisons_training_data:  # trained, not edited: its weights are all of it (see __init__)
                self._trained["poison", key] = model
            return meta

        label = f"poison: attack={attack.config.name}"
        key = self.poison_key(clean.key if clean else None)
        return self.cache.get_or_build("poison", key, build, label)

    def victim_train(self) -> Any:
        """The training set the victim fine-tuned on (poisoned under a data-poisoning attack; deterministic)."""
        return self.exp.attack.victim_train(self.poison_train)

    def purify(self, suspect: Artifact) -> Artifact:
        defense = self.exp.defense
        if not defense.defends:
            return suspect

        def build(out: Path, work: Path) -> dict[str, Any]:
            model = self.load(suspect)
            context = dataclasses.replace(self.context(work), victim_train=self.victim_train())
            return {"defense": defense.build(model, self.splits, context, out, self.save)}

        label = f"purify: defense={defense.config.name}"
        return self.cache.get_or_build("purify", self.purify_key(suspect.key), build, label)

    def evaluate(self, model_artifact: Artifact, role: str, detector: Artifact | None = None) -> Artifact:
        """The evaluate artifact (``meta()["metrics"]``, clean test ``predictions.json``) of a model, or (with
        ``detector``) of the model behind that fitted detector."""
        exp = self.exp

        def build(out: Path, work: Path) -> dict[str, Any]:
            if detector is not None:
                exp.defense.load(detector.path)
                metrics, outputs = evaluate_detector(
                    self.load(model_artifact), exp.defense, self.splits.test, exp.attack, self.context(work)
                )
                (out / "detector_outputs.json").write_text(json.dumps(outputs))
                return {"metrics": metrics}
            metrics, predictions = evaluate_model(
                self.load(model_artifact, shared=True),
                self.tokenizer,
                self.splits.test,
                exp.attack,
                seed=exp.seed,
                max_length=exp.model.max_length,
                batch_size=exp.trainer.eval_batch_size,
                device=exp.device,
                precision=exp.trainer.precision,
            )
            (out / "predictions.json").write_text(json.dumps(predictions))
            return {"metrics": metrics}

        key = self.evaluate_key(model_artifact.key if detector is None else detector.key)
        return self.cache.get_or_build("evaluate", key, build, f"evaluate: {role} model")

    def extend_report(self, report: dict[str, Any], models: dict[str, Artifact], tracker: Tracker) -> None:
        """A setting's own additions to the report (the federated rounds); central training adds none."""
