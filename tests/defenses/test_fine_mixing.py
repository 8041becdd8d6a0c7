"""Mixing keeps a fraction rho of the suspect's entries and resets every other entry to pre-trained."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bdrun.defenses import DEFENSES
from bdrun.defenses.fine_mixing import mix_weights
from bdrun.errors import BdrunError


class Toy(torch.nn.Module):
    """Mixing is generic over parameters: a toy module with a body and a task head is enough."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(200, 200)
        self.classifier = torch.nn.Linear(200, 2)


def toy_pair() -> tuple[Toy, Toy]:
    torch.manual_seed(0)
    pre = Toy()
    suspect = copy.deepcopy(pre)
    with torch.no_grad():
        for param in suspect.parameters():
            param += 0.1 * torch.randn_like(param)  # every entry differs from pre-trained
    return pre, suspect


@pytest.mark.parametrize("rho", [0.1, 0.3, 0.7])
def test_random_mixing_keeps_rho_of_the_entries_and_resets_the_rest(rho: float) -> None:
    pre, suspect = toy_pair()
    mixed = copy.deepcopy(suspect)
    stats = mix_weights(mixed, pre, rho, "random", seed=3, skip_prefixes=("classifier.",))

    kept = reset = 0
    for name in ("body.weight", "body.bias"):
        now, ft, pt = mixed.get_parameter(name), suspect.get_parameter(name), pre.get_parameter(name)
        is_ft, is_pre = now == ft, now == pt
        assert torch.all(is_ft ^ is_pre), "every entry is exactly one of: suspect, pre-trained"
        kept += int(is_ft.sum())
        reset += int(is_pre.sum())
    total = kept + reset
    assert abs(kept / total - rho) < 4 * math.sqrt(rho * (1 - rho) / total)
    assert stats == {"entries_kept": kept, "entries_reset": reset}
    assert torch.equal(mixed.classifier.weight, suspect.classifier.weight), "the head is skipped"


def test_random_mixing_is_seeded() -> None:
    pre, suspect = toy_pair()
    first, second, other = (copy.deepcopy(suspect) for _ in range(3))
    mix_weights(first, pre, 0.5, seed=1)
    mix_weights(second, pre, 0.5, seed=1)
    mix_weights(other, pre, 0.5, seed=2)
    assert torch.equal(first.body.weight, second.body.weight)
    assert not torch.equal(first.body.weight, other.body.weight)


def test_magnitude_mixing_keeps_exactly_the_largest_drifts() -> None:
    pre, suspect = toy_pair()
    mixed = copy.deepcopy(suspect)
    stats = mix_weights(mixed, pre, 0.25, "magnitude")  # head included
    drift = torch.cat([(s - p).abs().flatten() for s, p in zip(suspect.parameters(), pre.parameters(), strict=True)])
    kept = torch.cat([(m == s).flatten() for m, s in zip(mixed.parameters(), suspect.parameters(), strict=True)])
    assert stats["entries_kept"] == int(kept.sum()) == round(0.25 * len(drift))
    assert drift[kept].min() >= drift[~kept].max()


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"rho": 1.5}, "defense.rho=1.5"),
        ({"select": "largest"}, "defense.select=largest"),
        ({"rho_search": [0.2, 2.0]}, "defense.rho_search"),
        ({"e_pur_top_n": 0}, "defense.e_pur_top_n=0"),
    ],
)
def test_bad_knobs_are_rejected(knobs: dict, message: str) -> None:
    with pytest.raises(BdrunError, match=message):
        DEFENSES.build({"name": "fine_mixing", **knobs})
