"""The experiment: every component of one run, parsed from the composed Hydra config and checked alone and
together before any work starts (on the command line too, by :mod:`bdrun.preflight`).

It sits below the settings' stages (:mod:`bdrun.stages`, :mod:`bdrun.federated.stages`, registered in
:mod:`bdrun.settings`) and the run (:mod:`bdrun.pipeline`), which all take an :class:`Experiment`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from omegaconf import DictConfig

from bdrun.attacks import ATTACKS, Attack
from bdrun.data import DatasetConfig
from bdrun.defenses import DEFENSES, Defense
from bdrun.errors import boolean, check, seed_integer
from bdrun.federated import FederatedConfig
from bdrun.model_config import ModelConfig
from bdrun.models import encoder_depth, pick_device
from bdrun.optimizers import OPTIMIZERS, Optimizer
from bdrun.registry import parse_config
from bdrun.training import TrainerConfig
from bdrun.trust import TrustConfig


@dataclasses.dataclass
class Experiment:
    """Every component of one run, validated before any work starts."""

    model: ModelConfig
    dataset: DatasetConfig
    attack: Attack
    defense: Defense
    optimizer: Optimizer
    trainer: TrainerConfig
    seed: int
    device: torch.device
    cache_dir: Path
    data_dir: Path
    federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)
    clean: bool = True  # train and evaluate the clean reference model (see run())
    trust: TrustConfig = dataclasses.field(default_factory=TrustConfig)  # collapse thresholds (bdrun/trust.py)

    @property
    def setting(self) -> str:
        """The setting the run takes place in, a name in :data:`bdrun.settings.SETTINGS`: ``federated`` for any
        ``federated=`` config but ``none``, whose knobs (``federated.*``) then configure it."""
        return "federated" if self.federated.enabled else "central"


def parse_experiment(cfg: DictConfig) -> Experiment:
    """Every component, checked alone and together (this runs on the command line too, before any job)."""
    exp = Experiment(
        model=parse_config(ModelConfig, cfg.model, "model"),
        dataset=parse_config(DatasetConfig, cfg.dataset, "dataset"),
        attack=ATTACKS.build(cfg.attack),
        defense=DEFENSES.build(cfg.defense),
        optimizer=OPTIMIZERS.build(cfg.optimizer),
        trainer=parse_config(TrainerConfig, cfg.trainer, "trainer"),
        seed=seed_integer(cfg.seed),
        device=pick_device(str(cfg.device)),
        cache_dir=Path(cfg.paths.cache_dir),
        data_dir=Path(cfg.paths.data_dir),
        federated=parse_config(FederatedConfig, cfg.federated, "federated"),
        clean=boolean(cfg.get("clean", True), "clean"),
        trust=parse_config(TrustConfig, cfg.get("trust") or {}, "trust"),
    )
    check(
        exp.federated.enabled or not exp.defense.aggregates,
        f"defense={exp.defense.config.name} is a federated aggregator; add federated=iid (or another "
        "conf/federated/ setting)",
    )
    exp.attack.check_tuning(exp.model.tuning)  # EP and surgery edit frozen weights: no PET
    if exp.federated.enabled:
        exp.attack.check_federated()  # an attack's own objective or source data: clients run neither
    return exp


def check_label_indices(exp: Experiment, num_labels: int) -> None:
    """Every knob that names a class (attack.target_label, defense.protect_label) fits the dataset's labels.

    Runs on the command line before any job (with the declared dataset.num_labels) and again once the data is
    loaded, before the first stage.
    """
    exp.attack.check_labels(num_labels)
    exp.defense.check_labels(num_labels)


def check_model_shape(exp: Experiment, num_labels: int) -> None:
    """Every knob checkable from the model's config and module names alone (``model.num_layers``,
    ``model.lora_targets``, a defense's layer count), before the first stage rather than after a training.

    Runs before the first stage, and on the command line for a model on this machine (a hub id is left to the
    job, so that checking a sweep never waits on the network)."""
    exp.defense.check_model(encoder_depth(exp.model, num_labels))
