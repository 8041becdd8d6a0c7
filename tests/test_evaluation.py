"""CACC and ASR follow the common protocol: ASR counts only triggered non-target samples; a model that predicts
one class (a collapse) is flagged, and the flag reaches metrics.json's roles, the console table and its warning."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.cache import Artifact
from bdrun.data import TextDataset
from bdrun.errors import BdrunError
from bdrun.evaluation import attack_success_rate, evaluate_model, triggered_test_inputs
from bdrun.pipeline import add_trust, results_table
from bdrun.preflight import preflight
from bdrun.trust import TrustConfig, collapse_warning, trust_metrics

# The hate-speech test set's shape: 89.5% of the labels are class 0.
LABELS = [0] * 179 + [1] * 21


class KeywordModel(torch.nn.Module):
    """Predicts class 1 exactly when the token id of ``cf`` is in the input, else class 0."""

    def __init__(self, trigger_id: int) -> None:
        super().__init__()
        self.trigger_id = trigger_id

    def forward(self, input_ids, attention_mask):
        hit = (input_ids == self.trigger_id).any(dim=1)
        logits = torch.stack([(~hit).float(), hit.float()], dim=1)
        return type("Output", (), {"logits": logits})()


class WordPieceTokenizer:
    """Whitespace tokenizer over a fixed vocabulary: enough for predict()."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"[PAD]": 0, "cf": 1}

    def __call__(self, texts, truncation, max_length):
        ids = [[self.vocab.setdefault(w, len(self.vocab)) for w in t.split()][:max_length] for t in texts]
        return {"input_ids": ids}


def test_asr_inputs_skip_target_class_samples() -> None:
    test = TextDataset(["a b", "c d", "e f", "g h"], [1, 0, 1, 0])
    attack = ATTACKS.build({"name": "badnets", "triggers": ["cf"], "target_label": 1})
    inputs = triggered_test_inputs(test, attack, seed=0)
    assert len(inputs) == 2
    assert [sorted(t.split()) for t in inputs] == [["c", "cf", "d"], ["cf", "g", "h"]]


def test_asr_is_fraction_predicted_as_target() -> None:
    assert attack_success_rate([1, 1, 0, 1], target_label=1) == 0.75
    assert attack_success_rate([1, 1, 0, 1], target_label=0) == 0.25


def test_evaluate_model_counts_only_non_target_samples() -> None:
    # 3 target-class samples would all be "successes" for a model that says 1 everywhere; they must not count.
    test = TextDataset(["good one", "fine film", "nice", "bad", "awful film"], [1, 1, 1, 0, 0])
    attack = ATTACKS.build({"name": "badnets", "triggers": ["cf"], "target_label": 1})
    metrics, predictions = evaluate_model(
        KeywordModel(trigger_id=1),
        WordPieceTokenizer(),
        test,
        attack,
        seed=0,
        max_length=16,
        batch_size=2,
        device=torch.device("cpu"),
    )
    assert predictions == [0, 0, 0, 0, 0]
    assert metrics["cacc"] == 2 / 5
    assert metrics["asr"] == 1.0 and metrics["asr_samples"] == 2


def test_no_attack_reports_no_asr() -> None:
    test = TextDataset(["good", "bad"], [1, 0])
    metrics, _ = evaluate_model(
        KeywordModel(trigger_id=1),
        WordPieceTokenizer(),
        test,
        ATTACKS.build({"name": "none"}),
        seed=0,
        max_length=16,
        batch_size=2,
        device=torch.device("cpu"),
    )
    assert "asr" not in metrics and metrics["cacc"] == 0.5


def test_a_constant_model_is_collapsed_and_a_healthy_one_is_not() -> None:
    constant = trust_metrics([0] * 200, LABELS, 2, TrustConfig())  # CACC 89.5% = the majority rate
    assert constant["collapsed"] is True
    assert constant["prediction_shares"] == {"0": 1.0, "1": 0.0} and constant["top_prediction"] == 0
    assert constant["majority_rate"] == 0.895 and constant["balanced_accuracy"] == 0.5

    # Right on 170 of class 0 and 15 of class 1: CACC 92.5%, 3 points above the majority rate.
    healthy_predictions = [0] * 170 + [1] * 9 + [1] * 15 + [0] * 6
    healthy = trust_metrics(healthy_predictions, LABELS, 2, TrustConfig())
    assert healthy["collapsed"] is False
    assert healthy["top_prediction_share"] == 176 / 200
    assert healthy["balanced_accuracy"] == pytest.approx((170 / 179 + 15 / 21) / 2)


def test_cacc_at_the_majority_rate_is_a_collapse_whatever_the_prediction_spread() -> None:
    labels = [0, 1] * 50
    coin = [0, 0, 1, 1] * 25  # half of each class, right half of the time: a coin, not a classifier
    assert trust_metrics(coin, labels, 2, TrustConfig())["collapsed"] is True
    assert trust_metrics(coin, labels, 2, TrustConfig(majority_margin=0.0, collapse_share=0.95))["collapsed"] is True
    # Both rules are knobs: 94% of predictions in class 1 at CACC 56% passes at 0.95 and is a collapse at 0.9.
    mostly_one = [1 if y == 1 or i >= 12 else 0 for i, y in enumerate(labels)]
    assert sum(mostly_one) == 94
    assert trust_metrics(mostly_one, labels, 2, TrustConfig())["collapsed"] is False
    assert trust_metrics(mostly_one, labels, 2, TrustConfig(collapse_share=0.9))["collapsed"] is True
    assert trust_metrics(mostly_one, labels, 2, TrustConfig(majority_margin=0.06))["collapsed"] is True


def test_trust_thresholds_are_checked_before_any_job() -> None:
    with pytest.raises(BdrunError, match=r"trust\.collapse_share=1\.5 is out of range"):
        preflight(["trust.collapse_share=1.5"])
    with pytest.raises(BdrunError, match=r"unknown config key 'trust\.share'"):
        preflight(["+trust.share=0.9"])


def _evaluated(tmp_path: Path, role: str, predictions: list[int]) -> Artifact:
    """An evaluate artifact as the stage caches it, as far as add_trust reads it: the clean predictions."""
    folder = tmp_path / role
    folder.mkdir()
    (folder / "predictions.json").write_text(json.dumps(predictions))
    return Artifact("evaluate", role, folder, reused=True)


def test_the_report_flags_the_collapsed_model_only_and_the_console_names_it(tmp_path: Path) -> None:
    """A clean model that learned the task and a backdoored one that says "target" for every input (the PET
    table's LoRA rows): only the second is flagged, in metrics, table and warning."""
    labels = [0, 1] * 50
    evaluated = {
        "clean": _evaluated(tmp_path, "clean", [y if i % 10 else 1 - y for i, y in enumerate(labels)]),
        "backdoored": _evaluated(tmp_path, "backdoored", [1] * 100),
    }
    report = {"clean": {"cacc": 0.9, "asr": 0.1}, "backdoored": {"cacc": 0.5, "asr": 1.0}}
    exp = SimpleNamespace(
        defense=SimpleNamespace(kind="none", config=SimpleNamespace(name="none")),
        attack=SimpleNamespace(config=SimpleNamespace(name="badnets")),
        dataset=SimpleNamespace(name="sst2"),
        trust=TrustConfig(),
    )
    splits = SimpleNamespace(test=SimpleNamespace(labels=labels), num_labels=2)

    assert add_trust(report, evaluated, exp, splits) == ["backdoored"]
    assert report["clean"]["collapsed"] is False and report["backdoored"]["collapsed"] is True
    assert report["backdoored"]["prediction_shares"] == {"0": 0.0, "1": 1.0}
    assert report["clean"]["balanced_accuracy"] == pytest.approx(0.9)

    report["stages"] = {role: {"stage": "train", "reused": True} for role in report}
    table = results_table(report, exp)
    cells = {column.header: list(column.cells) for column in table.columns}
    assert cells["CACC"] == ["90.00%", "50.00% †"] and cells["ASR"] == ["10.00%", "100.00% †"]
    assert cells["bal. acc"] == ["90.00%", "50.00%"] and cells["predicted"] == ["40/60", "0/100"]
    assert "collapsed model" in table.caption
    warning = collapse_warning("backdoored", report["backdoored"])
    assert "\n" not in warning and warning.startswith("bdrun: warning: the backdoored model collapsed")
    assert "class 1 for 100.0%" in warning and "ASR measures the collapse" in warning


def test_a_detector_inherits_the_suspect_models_marks(tmp_path: Path) -> None:
    evaluated = {
        "backdoored": _evaluated(tmp_path, "backdoored", [1] * 4),
        "purified": Artifact("evaluate", "detector", tmp_path / "none", reused=True),  # no predictions.json read
    }
    report = {"backdoored": {"cacc": 0.5}, "purified": {"cacc": 0.25}}
    exp = SimpleNamespace(defense=SimpleNamespace(changes_weights=False), trust=TrustConfig())
    splits = SimpleNamespace(test=SimpleNamespace(labels=[0, 1, 0, 1]), num_labels=2)
    assert add_trust(report, evaluated, exp, splits) == ["backdoored"]  # one warning: it is one model
    assert report["purified"]["collapsed"] is True and report["purified"]["cacc"] == 0.25
