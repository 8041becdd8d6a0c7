"""Purifier strength chosen on clean dev: the strongest candidate that keeps dev accuracy wins, with its weights."""

from __future__ import annotations

from typing import Any

import torch

from bdrun.data import TextDataset
from bdrun.defenses.base import search_on_dev

DEV = TextDataset([f"s{i}" for i in range(20)], [1] * 20)
DEV_ACCURACY = {0.0: 0.95, 0.7: 0.5, 0.5: 0.8, 0.3: 0.9, 0.1: 0.6}  # the suspect (weight 0) and each candidate


class DevOracle:
    """Predicts so that dev accuracy is DEV_ACCURACY of the candidate written into the model's weight."""

    def predict(self, model: torch.nn.Module, texts: list[str], desc: str = "") -> list[int]:
        right = round(DEV_ACCURACY[round(float(model.weight.detach().flatten()[0]), 3)] * len(texts))
        return [1] * right + [0] * (len(texts) - right)


def search(max_drop: float) -> tuple[torch.nn.Module, dict[str, Any], list[float]]:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.zero_()
    suspect = model.weight.detach().clone()
    tried: list[float] = []

    def attempt(value: float) -> dict[str, Any]:
        assert torch.equal(model.weight, suspect)  # every candidate starts from the suspect's weights
        tried.append(value)
        with torch.no_grad():
            model.weight.fill_(value)
        return {"marker": value}

    result = search_on_dev(model, [0.7, 0.5, 0.3, 0.1], attempt, DEV, DevOracle(), max_drop, "reset_fraction")
    return model, result, tried


def test_the_strongest_candidate_reaching_the_dev_bar_is_kept_and_the_search_stops() -> None:
    model, result, tried = search(max_drop=0.2)  # the bar: the suspect's 0.95 - 0.2 = 0.75
    assert tried == [0.7, 0.5]  # 0.5 passes: the weaker ones are never tried
    assert result["reset_fraction"] == 0.5 and result["marker"] == 0.5 and result["dev_accuracy"] == 0.8
    assert result["suspect_dev_accuracy"] == 0.95
    assert result["reset_fraction_search"] == {"0.7": 0.5, "0.5": 0.8}
    assert torch.allclose(model.weight, torch.full_like(model.weight, 0.5))


def test_each_candidate_starts_from_the_suspect_and_without_a_pass_the_best_on_dev_is_kept() -> None:
    model, result, tried = search(max_drop=0.0)  # nothing reaches the suspect's 0.95
    assert tried == [0.7, 0.5, 0.3, 0.1]
    assert result["reset_fraction"] == 0.3 and result["dev_accuracy"] == 0.9
    assert torch.allclose(model.weight, torch.full_like(model.weight, 0.3))
