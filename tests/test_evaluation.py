"""CACC and ASR follow the common protocol: ASR counts only triggered non-target samples."""

from __future__ import annotations

import torch

from bdrun.attacks import ATTACKS
from bdrun.data import TextDataset
from bdrun.evaluation import attack_success_rate, evaluate_model, triggered_test_inputs


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
