"""MEFT's first phase raises the prediction entropy on clean data; its losses are minimal at uniform."""

from __future__ import annotations

import math

import pytest
import torch

from bdrun.defenses.meft import maximize_entropy, mean_entropy, negative_entropy, uniform_cross_entropy


def test_losses_are_minimal_at_uniform_predictions() -> None:
    uniform, confident = torch.zeros(4, 3), torch.tensor([[4.0, 0.0, 0.0]] * 4)
    assert uniform_cross_entropy(uniform, None).item() == pytest.approx(math.log(3))
    assert negative_entropy(uniform, None).item() == pytest.approx(-math.log(3))
    assert uniform_cross_entropy(confident, None) > uniform_cross_entropy(uniform, None)
    assert negative_entropy(confident, None) > negative_entropy(uniform, None)


def test_entropy_phase_raises_prediction_entropy(pretrained, clean, context) -> None:
    with torch.no_grad():  # a confident suspect: it calls every input class 0
        pretrained.classifier.weight *= 10
        pretrained.classifier.bias.copy_(torch.tensor([2.5, -2.5]))
    before = mean_entropy(pretrained, clean, context)
    stats = maximize_entropy(pretrained, clean, context, epochs=1, lr=1e-3, loss="uniform_ce")
    after = mean_entropy(pretrained, clean, context)
    assert before < 0.4
    assert after > before + 0.2
    assert stats["final_loss"] >= math.log(2) - 1e-6  # the phase really optimised the uniform cross-entropy


def test_training_mode_loss_is_cross_entropy_plus_weighted_max_entropy() -> None:
    from bdrun.defenses.meft import combined_loss

    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.0]]), torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels) + 0.3 * uniform_cross_entropy(logits, labels)
    assert combined_loss("uniform_ce", 0.3)(logits, labels).item() == pytest.approx(expected.item())


def test_training_mode_is_the_victims_own_training_on_the_poisoned_set(tmp_path) -> None:
    """mode=training retrains from the pre-trained weights on the poisoned training set with no clean set: with
    entropy_weight 0 it reproduces the backdoored model exactly; with weight > 0 it trains a different one."""
    import json

    from bdrun.pipeline import parse_experiment, run
    from bdrun.tracking import NoTracker, TrackerConfig
    from tests.conftest import compose_config

    def purified(weight: float) -> dict:
        overrides = ["defense=meft", "defense.mode=training", f"defense.entropy_weight={weight}", "defense.epochs=1"]
        exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path / "cache"))
        return run(exp, tmp_path / f"run{weight}", NoTracker(TrackerConfig("none")))

    plain = purified(0.0)
    diagnostics = plain["diagnostics"]["purified"]["defense"]
    assert diagnostics["start"] == "pretrained" and diagnostics["poisoned_samples"] > 0
    assert diagnostics["train_samples"] == 96  # the whole (poisoned) training set, not a clean subset
    assert plain["purified"]["side_effect"] == 0.0 or plain["purified"] == plain["backdoored"]
    backdoored = json.dumps({k: plain["backdoored"][k] for k in ("cacc", "asr")})
    assert json.dumps({k: plain["purified"][k] for k in ("cacc", "asr")}) == backdoored
    weighted = purified(1.0)["diagnostics"]["purified"]["defense"]
    assert weighted["final_loss"] > diagnostics["final_loss"]  # the max-entropy term is in the objective
