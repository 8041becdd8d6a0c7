"""Fine-purifying resets exactly the top-k entries by drift²/Fisher, and planted dimensions rank at the top."""

from __future__ import annotations

import torch

from bdrun.defenses.fine_purifying import diagonal_fisher, indicators, reset_top
from tests.defenses.conftest import drifted

ENCODER = "encoder.layer"


def flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors.values()])


def test_planted_dimensions_with_flat_clean_loss_rank_first(pretrained, clean, context) -> None:
    # Ordinary fine-tuning drift on every encoder weight, then a large drift planted where the clean loss is
    # flattest: the 20 encoder entries with the smallest non-zero Fisher.
    suspect = drifted(pretrained, 1e-3, only=ENCODER)
    fisher = {n: f for n, f in diagonal_fisher(suspect, clean, context, 8).items() if ENCODER in n}
    values = flat(fisher)
    candidates = torch.where(values > 0, values, torch.inf)
    planted = candidates.topk(20, largest=False).indices
    offsets = torch.tensor([0] + [f.numel() for f in fisher.values()]).cumsum(0)
    with torch.no_grad():
        for index in planted.tolist():
            tensor = int(torch.searchsorted(offsets, index, right=True)) - 1
            name = list(fisher)[tensor]
            suspect.get_parameter(name).view(-1)[index - offsets[tensor]] += 1e-2

    fisher = {n: f for n, f in diagonal_fisher(suspect, clean, context, 8).items() if ENCODER in n}
    scores = flat(indicators(suspect, pretrained, fisher, eps=1e-3))
    assert set(scores.topk(20).indices.tolist()) == set(planted.tolist())


def test_reset_is_exactly_the_top_k_by_the_indicator(pretrained, clean, context) -> None:
    suspect = drifted(pretrained, 1e-3)
    original = {n: p.detach().clone() for n, p in suspect.named_parameters()}
    scores = indicators(suspect, pretrained, diagonal_fisher(suspect, clean, context, 8), eps=1e-3)
    masks = reset_top(suspect, pretrained, scores, fraction=0.05)

    expected = torch.zeros(sum(s.numel() for s in scores.values()), dtype=torch.bool)
    expected[flat(scores).topk(round(0.05 * len(expected))).indices] = True
    assert torch.equal(flat(masks), expected)
    reference = dict(pretrained.named_parameters())
    for name, param in suspect.named_parameters():
        mask = masks[name]
        assert torch.equal(param[mask], reference[name][mask])
        assert torch.equal(param[~mask], original[name][~mask])
