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
- default ``reset_fraction`` 0.5, measured on the SST-2 benchmark's BadNets model among 0.1 / 0.3 / 0.5 / 0.7
  (CACC / ASR after purification: 0.1 left AddSent's backdoor at 100% ASR; 0.3 → 86.4 / 39.8; 0.5 → 85.4 /
  15.8; 0.7 → 81.8 / 16.2). 0.5 is the largest reset whose clean accuracy stays within 3 points of the clean
  model, a rule that needs no poisoned data (docs/results/defenses.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

HEAD_PREFIX = "classifier."


@dataclasses.dataclass
class FinePurifyingConfig(CleanDataConfig):
    reset_fraction: float = 0.5  # fraction of all entries reset to pre-trained, highest indicator first
    fisher_batch_size: int = 8  # clean samples per gradient in the Fisher estimate
    eps: float = 1e-3  # added to the Fisher, relative to its mean
    include_head: bool = False  # score and reset the classification head too (against its seeded init)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.reset_fraction <= 1, f"defense.reset_fraction={self.reset_fraction} must be in [0, 1]")
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
        masks = reset_top(model, pretrained, scores, self.config.reset_fraction)
        per_tensor = {n: int(m.sum()) for n, m in masks.items()}
        top_tensors = dict(sorted(per_tensor.items(), key=lambda item: -item[1])[:10])
        stats = self.fine_tune(model, clean, context, "fine-purifying")
        return {
            "entries_reset": sum(per_tensor.values()),
            "entries_scored": sum(m.numel() for m in masks.values()),
            "most_reset_tensors": top_tensors,
            **stats,
        }
