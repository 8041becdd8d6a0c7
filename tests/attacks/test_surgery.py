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


@pytest.mark.parametrize(
    ("method", "selection", "budget"),
    [
        ("dynamic", "magnitude", 2e-5),
        ("rounds", "magnitude", 2e-5),
        ("gradient", "magnitude", 300),
        ("gradient", "contrast", 300),
    ],
)
def test_at_most_budget_entries_change(victim, tmp_path: Path, method: str, selection: str, budget: float) -> None:
    stages, clean = victim
    knobs = {"method": method, "selection": selection, "budget": budget, "rounds": 2, "sparse_lr": 1e-2}
    attack = ATTACKS.build({"name": "surgery", **knobs})
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


def test_contrast_selection_ranks_the_trigger_row_first(victim, tmp_path: Path) -> None:
    """Clean text never moves the trigger's embedding row, poisoned text does: contrast puts it on top."""
    stages, clean = victim
    attack = ATTACKS.build({"name": "surgery", "method": "gradient", "selection": "contrast", "triggers": ["cf"]})
    data = attack.training_set(stages.splits.train)
    scores = attack.gradient_scores(copy.deepcopy(clean), data, stages.context(tmp_path))
    embeddings = next(name for name in scores if name.endswith("word_embeddings.weight"))
    trigger = stages.tokenizer.convert_tokens_to_ids("cf")
    row = scores[embeddings][trigger]
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert (flat > row.median()).float().mean() < 1e-3  # the trigger row sits in the top 0.1% of all entries
    # ... and above every entry that acts on all inputs, which |g_poison| alone ranks first
    everywhere = [s for name, s in scores.items() if "token_type" in name or name.startswith("classifier")]
    assert row.min() > max(s.max() for s in everywhere)


def test_dynamic_prunes_during_the_run_and_masked_entries_never_drift(victim, tmp_path: Path, monkeypatch) -> None:
    """Dyn-Δ in one run: after every optimizer step at most the scheduled count of entries differs from θ0 (no
    weight decay or leftover Adam moment moves a pruned entry), and the count shrinks to the budget mid-run."""
    from bdrun.attacks.surgery import InRunPruner

    stages, clean = victim
    theta0 = {n: p.detach().clone() for n, p in clean.named_parameters()}
    seen: list[tuple[int, int, int]] = []
    original = InRunPruner.__call__

    def checked(self, step: int, total_steps: int) -> None:
        original(self, step, total_steps)
        model = dict(self.model.named_parameters())
        differing = sum(int((model[n].detach() != v).sum()) for n, v in theta0.items())
        seen.append((step, differing, int(sum(m.sum() for m in self.mask.values()))))

    monkeypatch.setattr(InRunPruner, "__call__", checked)
    knobs = {"method": "dynamic", "budget": 500, "epochs": 4, "prune_every": 2, "prune_until": 0.5, "lr": 1e-3}
    attack = ATTACKS.build({"name": "surgery", **knobs})
    edited = copy.deepcopy(clean)
    diagnostics = attack.apply(edited, stages.tokenizer, stages.splits, stages.context(tmp_path))
    assert seen and all(differing <= kept for _, differing, kept in seen)
    total = sum(p.numel() for p in clean.parameters())
    kept = diagnostics["kept_after_prunings"]
    assert kept == sorted(kept, reverse=True) and kept[0] < total and kept[-1] == 500
    assert kept.count(500) >= len(kept) // 2  # the budget is reached by half the run, then kept
    assert 0 < diagnostics["entries_changed"] <= 500
