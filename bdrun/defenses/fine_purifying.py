"""``defense=fine_purifying``: reset the dimensions whose drift the clean loss cannot explain, then fine-tune.

Fine-purifying (Zhang et al., Findings of ACL 2023). Diffusion theory of fine-tuning ties how far each dimension
drifts from θ_pre to the curvature of the training loss along it. A dimension that drifted a lot although the
*clean* loss is flat along it was moved by something else: the poisoned data. Such dimensions are reset to
their pre-trained values, the rest is kept, and the model is fine-tuned on the clean set.

    δ = θ_ft − θ_pre,   H_ii ≈ diagonal Fisher on the clean set,   r_i = δ_i² / (H_ii + ε·mean(H))

The top ``reset_fraction`` of all entries by r is reset (exactly that many, one global ranking).

Our reading, not confirmed from the paper's full text (only its abstract could be read here):

- the indicator is δ²/H as above (the ranking is the same as |δ|/√H);
- H is the empirical Fisher diagonal: the mean over clean mini-batches (``fisher_batch_size``) of the squared
  gradient of the mean cross-entropy, in eval mode (no dropout). Per-sample gradients would be the textbook
  estimate; mini-batches cost a fraction of the backward passes on a CPU and keep the ranking's shape;
- ε is relative to the mean Fisher (``eps``) so that it means the same for every model and data size; it
  keeps rows that get no clean gradient at all (embeddings of words absent from the clean set) from all
  tying at infinity, so that among them the largest drift ranks first;
- the classification head has no pre-trained value, so by default it is kept as fine-tuned, as ``fine_mixing``
  keeps it (``include_head=false``); ``include_head=true`` scores and resets it like every other tensor
  against the run's seeded initial head (measured: the same CACC and ASR within 0.1 points on BadNets and
  AddSent at a 70% reset);
- the reset fraction is chosen per run on the clean dev split (``reset_search``, the default): candidates
  from the largest reset (the strongest purification) down, each reset + fine-tuned from the suspect, and the
  first whose dev accuracy is within ``max_dev_drop`` of the suspect's own dev accuracy is kept (the defender
  has no clean model to compare with; if none qualifies, the best on dev). The Fisher and the indicator are
  computed once, on the suspect. An earlier fixed default, 0.5, had been picked by looking at test CACC and
  ASR on one setting, and cost 9-14 points of CACC when the clean set was 100 sentences; ``reset_search=[]``
  with ``reset_fraction`` gives a fixed fraction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier, search_on_dev
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

HEAD_PREFIX = "classifier."


@dataclasses.dataclass
class FinePurifyingConfig(CleanDataConfig):
    reset_fraction: float = 0.5  # fraction of all entries reset to pre-trained, highest indicator first
    # candidates chosen between on clean dev, largest first (see the docstring); empty: use reset_fraction
    reset_search: list[float] = dataclasses.field(default_factory=lambda: [0.7, 0.5, 0.3, 0.1])
    max_dev_drop: float = 0.02  # reset_search: the dev accuracy a candidate may lose against the suspect's
    fisher_batch_size: int = 8  # clean samples per gradient in the Fisher estimate
    eps: float = 1e-3  # added to the Fisher, relative to its mean
    include_head: bool = False  # score and reset the classification head too (against its seeded init)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.reset_fraction <= 1, f"defense.reset_fraction={self.reset_fraction} must be in [0, 1]")
        check(
            all(0 <= f <= 1 for f in self.reset_search),
            f"defense.reset_search={self.reset_search} must hold fractions in [0, 1]",
        )
        check(0 <= self.max_dev_drop <= 1, f"defense.max_dev_drop={self.max_dev_drop} must be in [0, 1], e.g. 0.02")
        check(self.fisher_batch_size >= 1, f"defense.fisher_batch_size={self.fisher_batch_size} must be >= 1")
        check(self.eps > 0, f"defense.eps={self.eps} must be positive")


def diagonal_fisher(
    model: torch.nn.Module, clean: TextDataset, context: StageContext, batch_size: int
) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the clean cross-entropy, per parameter entry (mini-batch estimate)."""
    model.to(context.device).eval()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for batch, labels in context.batches(clean, batch_size):
        model.zero_grad(set_to_none=True)
        model(**batch, labels=labels).loss.backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                fisher[name] += param.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return {n: f / max(batches, 1) for n, f in fisher.items()}


@torch.no_grad()
def indicators(
    model: torch.nn.Module, pretrained: torch.nn.Module, fisher: dict[str, torch.Tensor], eps: float
) -> dict[str, torch.Tensor]:
    """r = δ² / (H + eps·mean H) per entry, for every parameter that ``fisher`` covers."""
    reference = dict(pretrained.named_parameters())
    params = dict(model.named_parameters())
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    floor = eps * mean if mean > 0 else eps
    return {n: (params[n] - reference[n].to(params[n].device)) ** 2 / (f + floor) for n, f in fisher.items()}


@torch.no_grad()
def reset_top(
    model: torch.nn.Module, pretrained: torch.nn.Module, scores: dict[str, torch.Tensor], fraction: float
) -> dict[str, torch.Tensor]:
    """Reset exactly round(fraction × entries) entries with the highest score; returns the reset masks."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    chosen = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    chosen[flat.topk(round(fraction * len(flat))).indices] = True
    masks = dict(zip(scores, chosen.split([s.numel() for s in scores.values()]), strict=True))
    reference = dict(pretrained.named_parameters())
    for name, param in model.named_parameters():
        if name in masks:
            mask = masks[name] = masks[name].view(param.shape)
            param.copy_(torch.where(mask, reference[name].to(param.device), param))
    return masks


@DEFENSES.register("fine_purifying", FinePurifyingConfig)
class FinePurifying(Purifier):
    config: FinePurifyingConfig

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        fisher = diagonal_fisher(model, clean, context, self.config.fisher_batch_size)
        if not self.config.include_head:
            fisher = {n: f for n, f in fisher.items() if not n.startswith(HEAD_PREFIX)}
        pretrained = context.load_pretrained()
        scores = indicators(model, pretrained, fisher, self.config.eps)

        def reset_and_tune(fraction: float) -> dict[str, Any]:
            masks = reset_top(model, pretrained, scores, fraction)
            per_tensor = {n: int(m.sum()) for n, m in masks.items()}
            return {
                "entries_reset": sum(per_tensor.values()),
                "entries_scored": sum(m.numel() for m in masks.values()),
                "most_reset_tensors": dict(sorted(per_tensor.items(), key=lambda item: -item[1])[:10]),
                **self.fine_tune(model, clean, context, f"fine-purifying reset {fraction}"),
            }

        c = self.config
        if not c.reset_search:
            return {"reset_fraction": c.reset_fraction, **reset_and_tune(c.reset_fraction)}
        candidates = sorted(c.reset_search, reverse=True)  # the largest reset = the strongest purification first
        return search_on_dev(model, candidates, reset_and_tune, splits.dev, context, c.max_dev_drop, "reset_fraction")
