"""DAN: Mahalanobis scores over every layer rank outliers first; the threshold honours the target FRR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bdrun.data import Splits, TextDataset
from bdrun.defenses import DEFENSES
from bdrun.defenses.base import DETECTOR_FILE
from bdrun.defenses.dan import dan_scores, fit_dan, layer_features, pool
from bdrun.errors import BdrunError
from bdrun.evaluation import detection_metrics
from bdrun.inference import frr_thresholds, threshold_at_frr
from bdrun.pipeline import parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import PRETRAINED, compose_config
from tests.defenses.toys import TRIGGER, BackdooredBag, ToyTokenizer, toy_context
from tests.test_pipeline import keys

LAYERS, HIDDEN = 3, 6
MIXING = 0.3 * np.random.default_rng(99).normal(size=(HIDDEN, HIDDEN)) + np.eye(HIDDEN)  # correlated noise


def inliers(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes whose means differ on the first dimension, in every layer, with correlated noise."""
    labels = rng.integers(0, 2, count)
    features = rng.normal(size=(count, LAYERS, HIDDEN)) @ MIXING
    features[:, :, 0] += np.where(labels == 1, 3.0, -3.0)[:, None]
    return features, labels


def fitted(shift: float, aggregation: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train, labels = inliers(rng, 300)
    calibration, _ = inliers(rng, 80)
    clean, _ = inliers(rng, 200)
    outliers, _ = inliers(rng, 40)
    outliers[:, 1:, 2:] += shift  # an off-manifold cluster in the upper layers only
    stats = fit_dan(train, labels, calibration, shrinkage=0.1, num_labels=2)
    return dan_scores(clean, stats, aggregation), dan_scores(outliers, stats, aggregation)


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_outlier_cluster_ranks_above_every_inlier(aggregation: str) -> None:
    clean, outliers = fitted(shift=6.0, aggregation=aggregation)
    assert outliers.min() > clean.max()
    assert detection_metrics(clean, outliers)["auroc"] == 1.0


def test_stage_auroc_equals_scikit_learn_on_the_same_scores() -> None:
    clean, outliers = fitted(shift=1.2)  # overlapping: an AUROC strictly between 0.5 and 1
    expected = roc_auc_score([0] * len(clean) + [1] * len(outliers), np.concatenate([clean, outliers]))
    assert 0.6 < expected < 1.0
    assert detection_metrics(clean, outliers)["auroc"] == pytest.approx(expected, abs=1e-12)


def test_calibration_scores_are_z_normalised_per_layer() -> None:
    rng = np.random.default_rng(1)
    train, labels = inliers(rng, 200)
    calibration, _ = inliers(rng, 60)
    stats = fit_dan(train, labels, calibration, shrinkage=0.1, num_labels=2)
    assert dan_scores(calibration, stats).mean() == pytest.approx(0.0, abs=1e-9)
    assert stats.means.shape == (LAYERS, 2, HIDDEN) and stats.precisions.shape == (LAYERS, HIDDEN, HIDDEN)


@pytest.mark.parametrize("count", [37, 175, 1000])
@pytest.mark.parametrize("frr", [0.005, 0.01, 0.03, 0.05, 0.1])
def test_threshold_rejects_at_most_the_target_frr(count: int, frr: float) -> None:
    scores = np.random.default_rng(count).normal(size=count)
    threshold = threshold_at_frr(scores, frr)
    assert np.mean(scores > threshold) <= frr
    assert np.mean(scores >= threshold) > 0  # an observed score, not beyond every one


def test_far_is_the_share_of_triggered_inputs_not_flagged() -> None:
    clean = np.arange(100, dtype=float)  # 95th percentile ("higher"): 95, 99th: 99
    triggered = np.array([50.0, 96.0, 98.0, 100.0])
    metrics = detection_metrics(clean, triggered, frr_thresholds(clean))  # held-out = these clean scores here
    assert metrics["far_at_frr5"] == 0.25 and metrics["far_at_frr1"] == 0.75


def test_mean_pooling_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").item() == 2.0
    assert pool(hidden, mask, "max").item() == 3.0
    assert pool(hidden, mask, "cls").item() == 1.0


def toy_splits(seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(80)]

    def sentences(count: int) -> TextDataset:
        texts = [" ".join(rng.choice(words, size=rng.integers(4, 10))) for _ in range(count)]
        return TextDataset(texts, [int(i % 2) for i in range(count)])

    return Splits(sentences(10), sentences(200), sentences(60), num_labels=2)


def test_dan_detector_fits_flags_triggers_and_round_trips(tmp_path: Path) -> None:
    tokenizer, model, splits = ToyTokenizer(), BackdooredBag(), toy_splits()
    context = toy_context(tokenizer, tmp_path)
    dan = DEFENSES.build({"name": "dan", "frr": 0.05})
    diagnostics = dan.fit(model, splits, context)
    assert diagnostics["layers"] == 2 and diagnostics["calibration_frr"] <= 0.05
    clean = dan.score(model, splits.test.texts, context)
    triggered = dan.score(model, [f"{TRIGGER} {t}" for t in splits.test.texts], context)
    assert detection_metrics(clean, triggered)["auroc"] > 0.95

    dan.save(tmp_path)
    loaded = DEFENSES.build({"name": "dan", "frr": 0.05})
    loaded.load(tmp_path)
    assert loaded.threshold == dan.threshold
    np.testing.assert_array_equal(loaded.score(model, splits.test.texts, context), clean)


def test_tiny_pipeline_with_dan_reports_detection_metrics(tmp_path: Path) -> None:
    # The pre-trained encoder: DAN screens inputs predicted as the target, which a random one may never predict.
    cfg = compose_config([*PRETRAINED, "defense=dan", "attack.triggers=[cf]"], cache_dir=tmp_path / "cache")
    report = run(parse_experiment(cfg), tmp_path / "run", NoTracker(TrackerConfig("none")))

    detected = report["purified"]
    for metric in ("auroc", "far_at_frr1", "far_at_frr5", "frr", "cacc", "asr"):
        assert 0.0 <= detected[metric] <= 1.0
    assert detected["latency_ratio"] > 0 and detected["asr"] <= report["backdoored"]["asr"]
    assert report["delta"]["asr"] == pytest.approx(detected["asr"] - report["backdoored"]["asr"])
    purify = tmp_path / "cache" / "purify" / report["stages"]["purified"]["key"]
    assert (purify / DETECTOR_FILE).is_file() and not (purify / "model.safetensors").exists()
    assert report["diagnostics"]["purified"]["defense"]["calibration_frr"] <= 0.05
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["purified"] == detected


def test_detector_knobs_change_only_the_purify_key(tmp_path: Path) -> None:
    base = keys(["defense=dan"], tmp_path)
    for change in (["defense=dan", "defense.frr=0.01"], ["defense=dan_cls"], ["defense=strip"], ["defense=rap"]):
        other = keys(change, tmp_path)
        assert (other["train"], other["poison"]) == (base["train"], base["poison"])
        assert other["purify"] != base["purify"]


def test_top_layers_keeps_the_uppermost_layers(pretrained, context) -> None:
    texts = ["a fine film", "a dull and long film"]
    every = layer_features(pretrained, texts, context, "cls")
    top = layer_features(pretrained, texts, context, "cls", top_layers=1)
    assert every.shape[1] == 2 and top.shape[1] == 1
    assert np.array_equal(top[:, 0], every[:, -1])


def test_auto_layer_weights_follow_clean_class_separation_and_find_a_backdoor_the_mean_dilutes() -> None:
    """``layers=auto``: weights come from clean labelled inputs only; a layer that carries no class information gets
    none, so an anomaly in the class-carrying layer is not averaged away by the uninformative ones."""
    rng = np.random.default_rng(3)

    def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
        features, labels = inliers(rng, count)
        features[:, 1:, 0] = rng.normal(size=(count, LAYERS - 1))  # layers 1, 2 carry no class information
        return features, labels

    train, labels = sample(300)
    calibration, calibration_labels = sample(120)
    clean, _ = sample(200)
    outliers, _ = sample(40)
    outliers[:, 0, 2:] += 1.5  # the anomaly shows in the class-carrying layer only
    equal = fit_dan(train, labels, calibration, shrinkage=0.1, num_labels=2)
    auto = fit_dan(train, labels, calibration, shrinkage=0.1, num_labels=2, calibration_labels=calibration_labels)
    np.testing.assert_allclose(equal.weights, np.full(LAYERS, 1 / LAYERS))
    assert auto.weights.sum() == pytest.approx(1.0) and auto.weights[0] > 0.9
    equal_auroc = detection_metrics(dan_scores(clean, equal), dan_scores(outliers, equal))["auroc"]
    auto_auroc = detection_metrics(dan_scores(clean, auto), dan_scores(outliers, auto))["auroc"]
    assert auto_auroc > equal_auroc + 0.05


def test_auto_layers_refuse_a_max_over_layers() -> None:
    with pytest.raises(BdrunError, match=r"defense\.aggregation=mean"):
        DEFENSES.parse({"name": "dan", "layers": "auto", "aggregation": "max"})
