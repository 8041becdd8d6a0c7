"""The shared interface of defenses.

A purifier gets the suspect model, the stage context (with the pre-trained weights on demand) and the
defender's small clean set, changes the model in place and returns its diagnostics. An online detector
(:class:`Detector`) leaves the model alone: it is fitted on the suspect model and the clean dev set, and at
inference scores each input (higher = more suspicious) and rejects those above its fitted threshold.

:meth:`Purifier.purify` is written once here: it draws the clean set, runs the registered preceding steps
(:data:`PRECEDING_STEPS`; E-PUR when ``defense.e_pur=true``, since any purifier can be combined with it, as the
Fine-mixing paper combines it with several defenses), then hands over to the defense's own
:meth:`Purifier.apply`. The steps are registered by their own modules (:mod:`bdrun.defenses.e_pur`), so this
base never imports a subclass's module.

The root class :class:`Defense` lives in :mod:`bdrun.defenses.defense` and the detectors' shared code in
:mod:`bdrun.defenses.detector`; both are re-exported here, the import path every defense uses.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.defense import Defense, DefenseConfig, SaveWeights, check_depth
from bdrun.defenses.detector import DETECTOR_FILE, Detector, DetectorConfig, split_dev
from bdrun.errors import check
from bdrun.inference import accuracy
from bdrun.optimizers import OPTIMIZERS

# With the re-exported names: every defense module, the tests and the scripts import these from here.
__all__ = [
    "DETECTOR_FILE",
    "PRECEDING_STEPS",
    "CleanDataConfig",
    "Defense",
    "DefenseConfig",
    "Detector",
    "DetectorConfig",
    "PrecedingStep",
    "Purifier",
    "check_depth",
    "clean_subset",
    "preceding_step",
    "search_on_dev",
    "split_dev",
]


@dataclasses.dataclass
class CleanDataConfig(DefenseConfig):
    """Knobs of a defense that owns a small clean set drawn from the (clean) training split."""

    # <= 1: fraction of the training set; > 1: number of samples.
    clean_size: float = 0.05
    epochs: int = 3  # fine-tuning epochs on the clean set
    lr: float | None = None  # null: the optimizer group's lr
    e_pur: bool = False  # first reset the most suspicious word embeddings (E-PUR, bdrun/defenses/e_pur.py)
    e_pur_top_n: int = 100  # how many vocabulary rows E-PUR resets
    # null: the run's optimizer group. A config of the optimizer group trains only this defense with another
    # optimizer: ``+optimizer@defense.optimizer=ga_sam`` (then ``defense.optimizer.rho=0.1`` etc.).
    optimizer: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.optimizer is not None:
            OPTIMIZERS.parse(self.optimizer)  # bad knobs fail before any work
        check(self.clean_size > 0, f"defense.clean_size={self.clean_size} must be a positive fraction or count")
        check(self.epochs >= 1, f"defense.epochs={self.epochs} must be at least 1")
        check(self.lr is None or self.lr > 0, f"defense.lr={self.lr} must be positive (or null)")
        check(self.e_pur_top_n >= 1, f"defense.e_pur_top_n={self.e_pur_top_n} must be at least 1")


def clean_subset(splits: Splits, clean_size: float, seed: int) -> TextDataset:
    """The defender's clean data: a seeded sample of the clean training split."""
    size = round(clean_size * len(splits.train)) if clean_size <= 1 else int(clean_size)
    check(size >= 1, f"defense.clean_size={clean_size} selects no samples; raise it")
    return splits.train.sample(size, seed)


# A step that may precede any purifier's own work: (suspect model, clean set, context, the purifier's knobs) ->
# its diagnostics, or None when the knobs leave it off.
PrecedingStep = Callable[[torch.nn.Module, TextDataset, StageContext, CleanDataConfig], dict[str, Any] | None]
PRECEDING_STEPS: dict[str, PrecedingStep] = {}


def preceding_step(name: str) -> Callable[[PrecedingStep], PrecedingStep]:
    """Register a step every purifier runs before :meth:`Purifier.apply`; ``name`` keys its diagnostics."""

    def register(step: PrecedingStep) -> PrecedingStep:
        if name in PRECEDING_STEPS:
            raise ValueError(f"preceding step '{name}' is registered twice")
        PRECEDING_STEPS[name] = step
        return step

    return register


class Purifier(Defense):
    """Purifies the suspect weights in place; every purifier owns a small clean set (:class:`CleanDataConfig`)."""

    kind = "purifier"
    config: CleanDataConfig

    def check_data(self, splits: Splits, seed: int) -> None:
        clean_subset(splits, self.config.clean_size, seed)

    def build(
        self, model: torch.nn.Module, splits: Splits, context: StageContext, out: Path, save_weights: SaveWeights
    ) -> dict[str, Any]:
        diagnostics = self.purify(model, splits, context)
        save_weights(model, out)
        return diagnostics

    def purify(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        clean = clean_subset(splits, self.config.clean_size, context.seed)
        if self.config.optimizer is not None:
            context = dataclasses.replace(context, optimizer=OPTIMIZERS.build(self.config.optimizer))
        diagnostics: dict[str, Any] = {"clean_samples": len(clean)}
        for name, step in PRECEDING_STEPS.items():
            done = step(model, clean, context, self.config)
            if done is not None:
                diagnostics[name] = done
        diagnostics.update(self.apply(model, clean, splits, context))
        return diagnostics

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        """The defense itself, on the defender's clean set; returns its own diagnostics."""
        raise NotImplementedError

    def fine_tune(self, model: torch.nn.Module, clean: TextDataset, context: StageContext, desc: str) -> dict:
        """Fine-tune on the clean set with the defense's epochs and lr (``desc`` names the checkpoint folder)."""
        return context.train(model, clean, desc=desc, epochs=self.config.epochs, lr=self.config.lr)


def search_on_dev(
    model: torch.nn.Module,
    candidates: Sequence[float],
    attempt: Callable[[float], dict[str, Any]],
    dev: TextDataset,
    context: StageContext,
    max_drop: float,
    name: str,
) -> dict[str, Any]:
    """Choose a purifier's strength on the clean dev split only: no test number and no poisoned input enter.

    The bar is the suspect's own dev accuracy minus ``max_drop`` (the defender has no clean model to compare
    with). Each candidate, strongest first, is applied to a fresh copy of the suspect weights by ``attempt``
    (which returns its diagnostics); the first that clears the bar is kept, or the one with the best dev
    accuracy if none does. ``model`` ends with the chosen candidate's weights.
    """
    suspect = copy.deepcopy(model.state_dict())
    suspect_dev = accuracy(context.predict(model, dev.texts, desc="dev suspect"), dev.labels)
    required = suspect_dev - max_drop
    tried: dict[str, float] = {}
    best: tuple[float, float, dict, dict] | None = None  # (dev accuracy, candidate, weights, diagnostics)
    for value in candidates:
        model.load_state_dict(suspect)
        stats = attempt(value)
        score = accuracy(context.predict(model, dev.texts, desc=f"dev {name}={value}"), dev.labels)
        tried[str(value)] = score
        if best is None or score > best[0] or score >= required:
            best = (score, value, copy.deepcopy(model.state_dict()), stats)
        if score >= required:
            break
    assert best is not None, "no candidate to search"
    score, value, weights, stats = best
    model.load_state_dict(weights)
    return {name: value, "dev_accuracy": score, "suspect_dev_accuracy": suspect_dev, f"{name}_search": tried, **stats}
