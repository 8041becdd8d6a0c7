"""FAR at FRR 1% / 5% uses thresholds set on held-out clean scores when the detector is fitted, never the test's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bdrun.attacks import ATTACKS
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import Detector, DetectorConfig
from bdrun.evaluation import detection_metrics, evaluate_detector
from bdrun.inference import threshold_at_frr
from tests.defenses.toys import TRIGGER, BackdooredBag, ToyTokenizer, toy_context


class LengthDetector(Detector):
    """Score = number of words (+100 with the trigger): known scores for checking where thresholds come from."""

    def fit_scorer(self, model, fitting, calibration, context) -> dict:
        return {}

    def score(self, model, texts, context) -> np.ndarray:
        return np.array([len(t.split()) + 100.0 * (TRIGGER in t.split()) for t in texts])

    def state(self) -> dict:
        return {}

    def load_state(self, state) -> None:
        pass


def test_detection_metrics_take_far_thresholds_from_held_out_scores() -> None:
    test_clean = np.arange(100, dtype=float)
    triggered = np.array([10.0, 40.0, 60.0, 200.0])
    heldout = {0.05: 30.0, 0.01: 50.0}  # a held-out distribution lower than the test's
    metrics = detection_metrics(test_clean, triggered, heldout)
    assert metrics["far_at_frr5"] == 0.25 and metrics["far_at_frr1"] == 0.5
    assert metrics["frr_at_frr5"] == pytest.approx(0.69) and metrics["frr_at_frr1"] == pytest.approx(0.49)
    assert "far_at_frr5" not in detection_metrics(test_clean, triggered)  # no held-out thresholds, no FAR


@pytest.mark.parametrize("calibration", ["screened", "all"])
def test_fit_sets_every_threshold_on_the_calibration_scores(tmp_path: Path, calibration: str) -> None:
    dev = TextDataset([" ".join(["w"] * n) for n in range(1, 41)], [0, 1] * 20)
    test = TextDataset([" ".join(["w"] * n) for n in range(50, 90)], [0, 1] * 20)  # longer: unseen scores
    splits = Splits(train=dev, dev=dev, test=test, num_labels=2)
    context = toy_context(ToyTokenizer(), tmp_path)
    model = BackdooredBag()
    detector = LengthDetector(DetectorConfig(name="length", protect_label=None, calibration=calibration))
    detector.fit(model, splits, context)
    from bdrun.defenses.base import split_dev

    _, held_out = split_dev(dev, 0.8, context.seed)
    scores = detector.score(model, held_out.texts, context)
    assert detector.frr_thresholds == {0.01: threshold_at_frr(scores, 0.01), 0.05: threshold_at_frr(scores, 0.05)}
    detector.save(tmp_path)
    loaded = LengthDetector(DetectorConfig(name="length", protect_label=None))
    loaded.load(tmp_path)
    assert loaded.frr_thresholds == detector.frr_thresholds

    attack = ATTACKS.build({"name": "badnets", "triggers": [TRIGGER], "target_label": 1})
    metrics, _ = evaluate_detector(model, loaded, test, attack, context)
    # Every test clean score is above every held-out one: an oracle threshold would give FRR 5%; ours says 100%.
    assert metrics["frr_at_frr5"] == 1.0 and metrics["far_at_frr5"] == 0.0
