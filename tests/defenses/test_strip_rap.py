"""STRIP and RAP on a toy backdoored model; detector-aware CACC / ASR after rejection; config errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bdrun.attacks import ATTACKS
from bdrun.data import TextDataset
from bdrun.defenses import DEFENSES
from bdrun.defenses.base import Detector, DetectorConfig
from bdrun.defenses.rap import rap_loss
from bdrun.defenses.strip import perturb, tfidf_rankings
from bdrun.errors import BdrunError
from bdrun.evaluation import REJECTED, detection_metrics, evaluate_detector
from tests.defenses.test_dan import toy_splits
from tests.defenses.toys import TRIGGER, BackdooredBag, ToyTokenizer, toy_context


def test_strip_entropy_is_lower_with_a_planted_dominant_trigger(tmp_path: Path) -> None:
    tokenizer, model, splits = ToyTokenizer(), BackdooredBag(), toy_splits()
    context = toy_context(tokenizer, tmp_path)
    strip = DEFENSES.build({"name": "strip", "copies": 10, "replace_ratio": 0.3})
    assert strip.fit(model, splits, context)["calibration_frr"] <= 0.05
    texts = splits.test.texts[:30]
    clean = strip.score(model, texts, context)
    triggered = strip.score(model, [f"{TRIGGER} {t}" for t in texts], context)
    assert np.all(clean <= 0) and -triggered.mean() < 0.5 * -clean.mean()  # score = -entropy
    assert detection_metrics(clean, triggered)["auroc"] > 0.9
    np.testing.assert_array_equal(strip.score(model, texts[:3], context), clean[:3])  # per-input seeding

    strip.save(tmp_path)
    loaded = DEFENSES.build({"name": "strip", "copies": 10, "replace_ratio": 0.3})
    loaded.load(tmp_path)
    assert loaded.vocab == strip.vocab and loaded.rankings == strip.rankings


def test_strip_perturbation_replaces_the_asked_share_of_words() -> None:
    copy = perturb("a b c d e f g h i j", ["Z"], 0.3, random.Random(0))
    assert copy.split().count("Z") == 3 and len(copy.split()) == 10
    ranked = perturb("a b c d e f g h i j", ["X", "Y", "Z"], 0.3, random.Random(0)).split()
    assert sorted(w for w in ranked if w in "XYZ") == ["X", "Y", "Z"]  # the top-ranked words, once each


def test_strip_ranks_words_by_tf_idf_per_held_out_sample() -> None:
    vocab, rankings = tfidf_rankings(["a a b .", "b c"], keep=5)
    assert vocab == ["a", "b", "c"]  # punctuation removed
    # idf(a) = idf(c) = log 2 + 1 > idf(b) = 1; tf(a, doc 1) = 2/3: a before b; tf(c, doc 2) = 1/2: c before b
    assert [[vocab[i] for i in r] for r in rankings] == [["a", "b"], ["c", "b"]]


def test_strip_replaces_with_words_of_the_other_label_only(tmp_path: Path) -> None:
    """The official STRIP text baseline: replacement words come from held-out samples *not* of protect_label."""
    dev = TextDataset([f"alpha{i} beta" if i % 2 else f"gamma{i} delta" for i in range(40)], [i % 2 for i in range(40)])
    splits = toy_splits()
    splits = type(splits)(train=splits.train, dev=dev, test=splits.test, num_labels=2)
    context = toy_context(ToyTokenizer(), tmp_path)
    strip = DEFENSES.build({"name": "strip", "copies": 4, "protect_label": 1, "calibration": "all"})
    strip.fit(BackdooredBag(), splits, context)
    assert strip.vocab and all(w.startswith("gamma") or w == "delta" for w in strip.vocab)
    # In every ranking the rare word (idf high) comes before the word every sample shares.
    assert all(strip.vocab[r[0]].startswith("gamma") and strip.vocab[r[1]] == "delta" for r in strip.rankings)


def test_rap_loss_is_zero_inside_the_range_and_hinged_outside() -> None:
    assert rap_loss(torch.tensor([0.1, 0.2, 0.3]), 0.1, 0.3, 1.0).item() == 0.0
    assert rap_loss(torch.tensor([0.0, 0.5]), 0.1, 0.3, 2.0).item() == pytest.approx(2 * 0.05 + 0.1)


def test_rap_trains_one_row_that_separates_robust_triggered_inputs(tmp_path: Path) -> None:
    tokenizer, model, splits = ToyTokenizer(), BackdooredBag(), toy_splits()
    context = toy_context(tokenizer, tmp_path)
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    rap = DEFENSES.build({"name": "rap", "word": "rapword", "epochs": 10, "lr": 0.5})
    rap.fit(model, splits, context)
    for name, tensor in model.state_dict().items():  # the model is left as it was
        assert torch.equal(tensor, before[name]), name
    assert rap.embedding.norm().item() == pytest.approx(before["embeddings.weight"][rap.token_id].norm().item())
    texts = splits.test.texts
    screened = rap.screened(context.predict(model, texts))  # the clean inputs RAP protects: predicted as 1
    assert 0 < screened.sum() < len(texts)
    clean = rap.score(model, texts, context)[screened]
    triggered = rap.score(model, [f"{TRIGGER} {t}" for t in texts], context)
    assert detection_metrics(clean, triggered)["auroc"] > 0.9


class KeywordDetector(Detector):
    """Flags exactly the inputs that contain the trigger (score 1), for checking the metric bookkeeping."""

    def score(self, model, texts, context) -> np.ndarray:
        return np.array([float(TRIGGER in t.split()) for t in texts])


def test_rejected_inputs_count_as_errors_when_clean_and_as_defended_when_triggered(tmp_path: Path) -> None:
    detector = KeywordDetector(DetectorConfig(name="keyword", protect_label=None))  # screens every input
    detector.threshold = 0.5
    test = TextDataset(["w1 w2", f"w3 {TRIGGER}", "w4", "w5 w6"], [0, 0, 1, 1])
    attack = ATTACKS.build({"name": "badnets", "triggers": [TRIGGER], "target_label": 1})
    metrics, outputs = evaluate_detector(BackdooredBag(), detector, test, attack, toy_context(ToyTokenizer(), tmp_path))
    assert outputs["triggered_predictions"] == [1, 1]  # the backdoor works ...
    assert metrics["asr"] == 0.0  # ... but every triggered input is rejected
    assert metrics["frr"] == 0.25 and metrics["auroc"] == pytest.approx(7 / 8)
    plain_correct = [p == y for p, y in zip(outputs["clean_predictions"], test.labels, strict=True)]
    assert metrics["cacc"] == (sum(plain_correct) - plain_correct[1]) / 4  # the rejected clean input is an error
    assert REJECTED not in outputs["clean_predictions"] and metrics["latency_ratio"] > 0


def test_only_inputs_predicted_as_the_protected_label_are_screened(tmp_path: Path) -> None:
    test = TextDataset(["w1 w2", f"w3 {TRIGGER}", "w4", "w5 w6", "w7 w8 w9", "w10"], [0, 0, 1, 1, 0, 1])
    attack = ATTACKS.build({"name": "badnets", "triggers": [TRIGGER], "target_label": 1})
    context = toy_context(ToyTokenizer(), tmp_path)
    # Protecting class 0: the triggered inputs (predicted 1) pass unscreened, so nothing is defended.
    detector = KeywordDetector(DetectorConfig(name="keyword", protect_label=0))
    detector.threshold = 0.5
    metrics, outputs = evaluate_detector(BackdooredBag(), detector, test, attack, context)
    assert outputs["clean_predictions"][1] == 1 and set(outputs["triggered_predictions"]) == {1}
    assert metrics["asr"] == 1.0 and metrics["screened_triggered"] == 0 and "auroc" not in metrics
    assert metrics["frr"] == 0.0  # "w3 cf" scores 1 but is predicted 1: not screened, not rejected
    assert metrics["screened_clean"] == outputs["clean_predictions"].count(0)

    # Protecting class 1: AUROC is computed on the inputs predicted as 1 only (scikit-learn on that subset).
    detector = KeywordDetector(DetectorConfig(name="keyword", protect_label=1))
    detector.threshold = 0.5
    metrics, outputs = evaluate_detector(BackdooredBag(), detector, test, attack, context)
    clean_scores = np.array(outputs["clean_scores"])[np.array(outputs["clean_predictions"]) == 1]
    triggered_scores = np.array(outputs["triggered_scores"])
    labels = [0] * len(clean_scores) + [1] * len(triggered_scores)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[clean_scores, triggered_scores]))
    assert metrics["asr"] == 0.0 and metrics["frr"] == pytest.approx(1 / len(clean_scores))


@pytest.mark.parametrize(
    "node",
    [
        {"name": "dan", "pooling": "avg"},
        {"name": "dan", "aggregation": "min"},
        {"name": "dan", "frr": 0.0},
        {"name": "strip", "copies": 0},
        {"name": "rap", "drop_low": 0.4, "drop_high": 0.2},
        {"name": "rap", "fit_fraction": 1.0},
        {"name": "rap", "protect_label": None},
        {"name": "dan", "protect_label": -1},
    ],
)
def test_bad_detector_knobs_are_one_line_errors(node: dict) -> None:
    with pytest.raises(BdrunError) as err:
        DEFENSES.build(node)
    assert "\n" not in str(err.value)
