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
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.errors import check
from bdrun.inference import accuracy, frr_thresholds, threshold_at_frr
from bdrun.optimizers import OPTIMIZERS

DETECTOR_FILE = "detector.safetensors"


@dataclasses.dataclass
class DefenseConfig:
    name: str


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


class Defense:
    kind = "none"
    # Part of the purify cache key: bump it when a code change alters what the same config produces, so that
    # cached artifacts of the old code are rebuilt instead of reused.
    revision = 1

    def __init__(self, config: DefenseConfig) -> None:
        self.config = config

    def check_labels(self, num_labels: int) -> None:
        """Reject knobs naming a class the dataset lacks, before any stage runs (no such knob by default)."""

    def check_data(self, splits: Splits, seed: int) -> None:
        """Checks that need the loaded data, run before any stage (none by default)."""

    def check_model(self, depth: int) -> None:
        """Reject knobs that count more encoder layers than the run's model has (``depth``), before any stage
        (no such knob by default); the stage checks the same with :func:`check_depth`."""


def check_depth(knob: str, count: int | None, depth: int) -> None:
    """A knob that counts encoder layers fits the model: one message before the first stage and at the stage."""
    check(
        count is None or count <= depth,
        f"{knob}={count} but the model has only {depth} encoder layers; use at most {depth}",
    )


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


@dataclasses.dataclass
class DetectorConfig(DefenseConfig):
    """Knobs shared by online detectors: the clean dev set is split into a fitting and a calibration part."""

    # The class the defender protects (the configs set it to the attack's target label): only inputs the model
    # assigns to it are screened, as in the DAN and RAP papers' protocol. null: screen every input.
    protect_label: int | None = 1
    frr: float = 0.05  # target false-rejection rate on the calibration inputs; sets the threshold
    # Which held-out clean scores set the thresholds: "screened" (those predicted as protect_label, the inputs
    # the detector will see) or "all" (every calibration input, as the official DAN code does).
    calibration: str = "screened"
    fit_fraction: float = 0.8  # share of the (shuffled, seeded) dev set used for fitting; the rest calibrates
    test_subset: int | None = None  # score only a seeded subset of this many test samples (costly detectors)

    def __post_init__(self) -> None:
        check(
            self.protect_label is None or self.protect_label >= 0,
            f"defense.protect_label={self.protect_label} must be a class index (or null to screen every input)",
        )
        check(0.0 < self.frr < 1.0, f"defense.frr={self.frr} must be a fraction in (0, 1), e.g. 0.05")
        check(
            self.calibration in ("screened", "all"),
            f"defense.calibration={self.calibration} is not supported; use screened or all",
        )
        check(0.0 < self.fit_fraction < 1.0, f"defense.fit_fraction={self.fit_fraction} must be in (0, 1), e.g. 0.8")
        check(
            self.test_subset is None or self.test_subset >= 1,
            f"defense.test_subset={self.test_subset} must be a positive count (or null for the whole test set)",
        )


def split_dev(dev: TextDataset, fit_fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """Shuffle the clean dev set (seeded) and cut it into a fitting and a calibration part."""
    order = list(range(len(dev)))
    random.Random(seed).shuffle(order)
    cut = round(fit_fraction * len(order))
    check(
        0 < cut < len(order),
        f"defense.fit_fraction={fit_fraction} leaves no fitting or no calibration sample of {len(dev)} dev samples",
    )
    return dev.subset(order[:cut]), dev.subset(order[cut:])


class Detector(Defense):
    """An online defense: flags inputs whose score exceeds a threshold fitted for a target FRR.

    Only inputs that the model assigns to ``protect_label`` are screened: any other prediction cannot be a
    backdoor success, so the detector lets it through. This is the protocol of the DAN and RAP papers (both
    official evaluations keep only the test inputs predicted as the protected label, clean and triggered
    alike), and applying it here to every detector keeps the comparison fair.

    Subclasses implement :meth:`fit_scorer`, :meth:`score` (every input, screened or not) and their state as a
    dict of tensors; :meth:`fit` splits the dev set and calibrates the threshold on the screened held-out
    inputs, identically for every detector.
    """

    kind = "detector"
    config: DetectorConfig

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self.threshold = float("inf")  # flags nothing until fitted
        self.frr_thresholds: dict[float, float] = {}  # FRR -> threshold on held-out clean scores (FAR metrics)

    def check_labels(self, num_labels: int) -> None:
        label = self.config.protect_label
        check(
            label is None or label < num_labels,
            f"defense.protect_label={label} but the dataset has {num_labels} labels (0..{num_labels - 1}); "
            "set it to the attack's target label",
        )

    def check_data(self, splits: Splits, seed: int) -> None:
        split_dev(splits.dev, self.config.fit_fraction, seed)

    def fit(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        """Fit the scorer on part of the dev set, then set the thresholds on the held-out clean scores.

        The operating threshold (``defense.frr``) and the thresholds of the reported FAR at FRR 1% / 5% all come
        from the held-out calibration scores: the screened ones, or every one with ``defense.calibration=all``.
        """
        fitting, calibration = split_dev(splits.dev, self.config.fit_fraction, context.seed)
        diagnostics = self.fit_scorer(model, fitting, calibration, context)
        scores = self.score(model, calibration.texts, context)
        screened = self.screened(context.predict(model, calibration.texts, desc="calibration predict"))
        check(
            bool(screened.any()),
            f"no calibration input is predicted as defense.protect_label={self.config.protect_label}; "
            "set it to the attack's target label (or null to screen every input)",
        )
        calibrating = scores[screened] if self.config.calibration == "screened" else scores
        self.threshold = threshold_at_frr(calibrating, self.config.frr)
        self.frr_thresholds = frr_thresholds(calibrating)
        return {
            **diagnostics,
            "fit_samples": len(fitting),
            "calibration_samples": len(calibration),
            "calibration_screened": int(screened.sum()),
            "threshold": self.threshold,
            "far_thresholds": {f"frr{round(100 * f)}": t for f, t in self.frr_thresholds.items()},
            "calibration_frr": float(np.mean(calibrating > self.threshold)),
        }

    def screened(self, predictions: Sequence[int]) -> np.ndarray:
        """Which inputs the detector screens, from the model's predictions: those of the protected label."""
        predicted = np.asarray(predictions)
        if self.config.protect_label is None:
            return np.ones(len(predicted), dtype=bool)
        return predicted == self.config.protect_label

    def fit_scorer(
        self, model: torch.nn.Module, fitting: TextDataset, calibration: TextDataset, context: StageContext
    ) -> dict[str, Any]:
        raise NotImplementedError

    def score(self, model: torch.nn.Module, texts: Sequence[str], context: StageContext) -> np.ndarray:
        """One score per text; higher = more suspicious."""
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        tensors = {**self.state(), "threshold": torch.tensor([self.threshold], dtype=torch.float64)}
        if self.frr_thresholds:
            tensors["frr_thresholds"] = torch.tensor(list(self.frr_thresholds.items()), dtype=torch.float64)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / DETECTOR_FILE))

    def load(self, folder: Path) -> None:
        state = load_file(str(folder / DETECTOR_FILE))
        self.threshold = float(state.pop("threshold").item())
        pairs = state.pop("frr_thresholds", torch.empty(0, 2)).tolist()
        self.frr_thresholds = {float(frr): float(threshold) for frr, threshold in pairs}
        self.load_state(state)
