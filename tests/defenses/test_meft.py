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
