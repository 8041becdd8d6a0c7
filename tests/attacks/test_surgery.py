"""Surgery changes at most ``budget`` parameter entries (and some), with either selection method."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.attacks.surgery import budget_entries
from bdrun.errors import BdrunError


def changed(before: torch.nn.Module, after: torch.nn.Module) -> int:
    params = dict(after.named_parameters())
    return sum(int((p != params[n]).sum()) for n, p in before.named_parameters())


@pytest.mark.parametrize(("method", "budget"), [("dynamic", 2e-5), ("gradient", 300)])
def test_at_most_budget_entries_change(victim, tmp_path: Path, method: str, budget: float) -> None:
    stages, clean = victim
    attack = ATTACKS.build({"name": "surgery", "method": method, "budget": budget, "rounds": 2, "sparse_lr": 1e-2})
    edited = copy.deepcopy(clean)
    diagnostics = attack.apply(edited, stages.tokenizer, stages.splits, stages.context(tmp_path))
    total = sum(p.numel() for p in clean.parameters())
    allowed = budget if budget > 1 else int(budget * total)
    count = changed(clean, edited)
    assert 0 < count <= allowed
    assert diagnostics["entries_changed"] == count and diagnostics["budget"] == allowed
    assert diagnostics["poisoned_samples"] == round(0.1 * 64)


def test_budget_count_or_fraction() -> None:
    assert budget_entries(300, 10_000) == 300
    assert budget_entries(0.01, 10_000) == 100
    assert budget_entries(1e-9, 10_000) == 1
    with pytest.raises(BdrunError, match=r"attack\.budget=2\.5"):
        ATTACKS.build({"name": "surgery", "budget": 2.5})
    with pytest.raises(BdrunError, match=r"attack\.method=lagrange"):
        ATTACKS.build({"name": "surgery", "method": "lagrange"})
