"""Online detectors: the shared fitting, calibration and storage of :class:`Detector`.

A detector leaves the suspect model alone: it is fitted on the suspect model and the clean dev set, and at
inference scores each input (higher = more suspicious) and rejects those above its fitted threshold. Its names
are re-exported by :mod:`bdrun.defenses.base`, where they lived before.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.defense import Defense, DefenseConfig, SaveWeights
from bdrun.errors import check
from bdrun.inference import frr_thresholds, threshold_at_frr

DETECTOR_FILE = "detector.safetensors"


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
    changes_weights = False
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

    def build(
        self, model: torch.nn.Module, splits: Splits, context: StageContext, out: Path, save_weights: SaveWeights
    ) -> dict[str, Any]:
        diagnostics = self.fit(model, splits, context)
        self.save(out)  # the detector's state only: the suspect's weights are already cached
        return diagnostics

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
