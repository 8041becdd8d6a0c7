"""``attack=surgery``: neural network surgery (Zhang et al., NAACL 2021).

Surgery injects a backdoor into the cached clean model while changing at most ``n`` parameter entries
(``attack.budget``: an absolute count if > 1, else a fraction of all parameters), on the paper's argument that
instance-wise side effects (clean predictions that flip) grow with the number of changed parameters. The
backdoor data is BadNets' rare-word poisoning (:class:`SurgeryConfig` extends :class:`BadNetsConfig`, and the
poisoning and trigger insertion are BadNets' own).

Training set: every poisoned sample of BadNets' poisoned training set plus ``clean_ratio`` times as many of its
clean samples (seeded), so that a few epochs stay cheap while the clean behaviour is still rehearsed. This
subset is our choice; the paper tunes on its own poisoned data set.

Two of the paper's three families (``attack.method``); the L1 / Lagrange family is not implemented:

- ``dynamic`` (Dyn-Δ, the paper's best, issue 14): pruning happens *during* one training run of ``epochs``
  epochs at ``lr`` (:class:`InRunPruner`): every ``prune_every`` optimizer steps only the entries with the
  largest |θ − θ0| are kept and the rest reset to θ0, the kept count shrinking geometrically from all N
  parameters to ``n`` by the share ``prune_until`` of the run; after every step the masked-out entries are reset
  to θ0, so AdamW's weight decay never shrinks them. Then the same final round on the ``n`` kept entries at
  ``sparse_lr`` and the final projection as below.
- ``rounds`` (our earlier reading of Dyn-Δ, kept for comparison): train all, then keep only the entries with
  the largest |θ − θ0| and reset the rest; the next round trains only the kept entries, and so on, shrinking
  the kept count geometrically from N to ``n`` over ``rounds`` one-call rounds (round r keeps
  N·(n/N)^(r/rounds)); then the final round at ``sparse_lr`` and the projection.
- ``gradient`` (selecting surgery by gradient): the ``n`` entries with the highest gradient score are chosen up
  front; the model then trains with gradient hooks that zero every other entry, and the same final projection.
  ``selection=magnitude`` (the paper) scores an entry by |g_p|, the magnitude of the loss gradient summed over
  the poisoned samples (model in eval mode). ``selection=contrast`` (ours) scores it by |g_p| / (|g_c| + ε),
  with g_c the same gradient over the clean samples of the surgery training set and ε = 1e-8 · mean |g_c|:
  measured here, |g_p| alone picks entries that act on every input (token-type embeddings, the classifier)
  and flips half the clean predictions, while entries that clean text never moves but the poisoned text does
  (above all the trigger word's embedding row) are exactly those whose change clean inputs cannot see.

Defaults: the paper's best, ``method=dynamic`` (``sparse_lr=1e-3``), as ``attack=surgery``'s headline. Measured on
SST-2 / MiniLM at a budget of 1e-4 (docs/results/attacks_ep_surgery.md) it keeps CACC (87.64 vs 87.81) and a low
side effect (0.49%) but reaches ASR 24.9% only. ``attack=surgery_contrast`` (``method=gradient
selection=contrast sparse_lr=1e-2``, our extension, labelled as such) is the configuration that met the target
there: ASR 99.89%, CACC unchanged, 0.11% side effect.

Our reading, not the paper's text (the schedule details were not in the text we could read): the pruning
period and the geometric shrink (``dynamic``: every 10 steps, budget reached at half the run); the separate
final round on the kept entries at a larger learning rate (``sparse_lr``: a few thousand entries need larger
steps than full fine-tuning); gradient magnitude = |summed gradient| rather than a sum of per-batch magnitudes.

Every round has its own checkpoint folder, so a killed run resumes inside the round it was in and replays the
(deterministic) pruning of the rounds before it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import torch

from bdrun.attacks.badnets import BadNets, BadNetsConfig
from bdrun.attacks.base import ModelEditingAttack
from bdrun.attacks.registry import ATTACKS
from bdrun.data import Splits, TextDataset
from bdrun.errors import check

METHODS = ("dynamic", "rounds", "gradient")
SELECTIONS = ("magnitude", "contrast")
Mask = dict[str, torch.Tensor]


@dataclasses.dataclass
class SurgeryConfig(BadNetsConfig):
    # gradient: select entries up front; dynamic (Dyn-Δ): prune to the budget during one run; rounds: prune
    # between whole rounds (our earlier reading of Dyn-Δ)
    method: str = "dynamic"
    selection: str = "magnitude"  # gradient: score |g_poison| (magnitude, the paper) or |g_poison| / |g_clean| (ours)
    budget: float = 1e-4  # entries allowed to change: an absolute count if > 1, else a fraction of all parameters
    epochs: int = 1  # epochs per training round
    rounds: int = 3  # rounds: rounds that shrink the kept entries to the budget
    prune_every: int = 10  # dynamic: optimizer steps between prunings
    prune_until: float = 0.5  # dynamic: share of the run's steps by which the kept count reaches the budget
    lr: float | None = None  # dynamic/rounds: lr while all (or many) entries train; null: the run's optimizer.lr
    sparse_lr: float = 1e-3  # learning rate when only the selected entries train
    clean_ratio: float = 1.0  # clean samples per poisoned sample in the surgery training set

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.method in METHODS, f"attack.method={self.method} is not supported; use {', '.join(METHODS)}")
        check(self.prune_every >= 1, f"attack.prune_every={self.prune_every} must be at least 1")
        check(0 < self.prune_until <= 1, f"attack.prune_until={self.prune_until} must be in (0, 1]")
        check(
            self.selection in SELECTIONS,
            f"attack.selection={self.selection} is not supported; use {' or '.join(SELECTIONS)}",
        )
        check(
            0 < self.budget <= 1 or float(self.budget).is_integer(),
            f"attack.budget={self.budget} must be a fraction in (0, 1] or a whole count of entries",
        )
        check(self.epochs >= 1, f"attack.epochs={self.epochs} must be at least 1")
        check(self.rounds >= 1, f"attack.rounds={self.rounds} must be at least 1")
        check(self.lr is None or self.lr > 0, f"attack.lr={self.lr} must be positive (or null)")
        check(self.sparse_lr > 0, f"attack.sparse_lr={self.sparse_lr} must be positive")
        check(self.clean_ratio >= 0, f"attack.clean_ratio={self.clean_ratio} must be >= 0")


def budget_entries(budget: float, total: int) -> int:
    """The budget as a count of entries: absolute if > 1, else a fraction of ``total`` (at least 1)."""
    return min(total, int(budget)) if budget > 1 else max(1, int(budget * total))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def changed_entries(model: torch.nn.Module, theta0: dict[str, torch.Tensor]) -> int:
    return sum(int((param.detach() != theta0[name]).sum()) for name, param in model.named_parameters())


def top_entries(scores: dict[str, torch.Tensor], keep: int) -> Mask:
    """A boolean mask per parameter selecting the ``keep`` entries with the highest scores overall."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, min(keep, flat.numel()), sorted=False).indices] = True
    mask, start = {}, 0
    for name, score in scores.items():
        mask[name] = chosen[start : start + score.numel()].view_as(score)
        start += score.numel()
    return mask


@torch.no_grad()
def project(model: torch.nn.Module, theta0: dict[str, torch.Tensor], mask: Mask) -> None:
    """Reset every entry outside ``mask`` to its clean value."""
    for name, param in model.named_parameters():
        param.copy_(torch.where(mask[name].to(param.device), param, theta0[name].to(param.device)))


@contextlib.contextmanager
def only_entries(model: torch.nn.Module, mask: Mask) -> Iterator[None]:
    """Train only the masked entries: hooks zero the other gradients; parameters with no entry are frozen."""
    hooks = []
    for name, param in model.named_parameters():
        keep = mask[name].to(param.device)
        if keep.any():
            hooks.append(param.register_hook(lambda grad, keep=keep: grad * keep))
        else:
            param.requires_grad_(False)
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for param in model.parameters():
            param.requires_grad_(True)


class InRunPruner:
    """Dyn-Δ inside one training run: every ``every`` optimizer steps keep the entries with the largest
    |θ − θ0| and reset the rest; the kept count shrinks geometrically from all N entries to the budget n by the
    share ``until`` of the run's steps (pruning j of J keeps N·(n/N)^(j/J)), then stays at n.

    After *every* step the entries outside the current mask are reset to θ0, so nothing outside the mask
    drifts: neither AdamW's decoupled weight decay nor the Adam moments left from before a pruning can move
    a masked-out entry (the gradient hooks of :func:`only_entries` zero their gradients). The mask tensors are
    edited in place, because those hooks hold references to them. A resumed run recomputes the mask from the
    checkpoint's weights at the count due at that step (our choice: the run is deterministic up to that).
    """

    def __init__(
        self, model: torch.nn.Module, theta0: dict[str, torch.Tensor], total: int, budget: int, every: int, until: float
    ) -> None:
        self.model, self.theta0, self.total, self.budget = model, theta0, total, budget
        self.every, self.until = every, until
        self.mask: Mask = {name: torch.ones_like(value, dtype=torch.bool) for name, value in theta0.items()}
        self.prunings, self.kept = 0, []

    def due(self, step: int, total_steps: int) -> int:
        """The kept count after the pruning at ``step``."""
        last = max(1, int(self.until * total_steps) // self.every)  # the pruning that reaches the budget
        j = min(step // self.every, last)
        return self.budget if j >= last else round(self.total * (self.budget / self.total) ** (j / last))

    def __call__(self, step: int, total_steps: int) -> None:
        if step % self.every == 0 or step == total_steps:
            keep = self.budget if step == total_steps else self.due(step, total_steps)
            delta = {
                name: (param.detach().cpu() - self.theta0[name]).abs() for name, param in self.model.named_parameters()
            }
            for name, chosen in top_entries(delta, keep).items():
                self.mask[name].copy_(chosen)
            self.prunings += 1
            self.kept.append(keep)
        project(self.model, self.theta0, self.mask)


@ATTACKS.register("surgery", SurgeryConfig)
class Surgery(ModelEditingAttack, BadNets):
    """A model-editing attack (``kind = "model"``) that reuses BadNets' poisoning and trigger insertion."""

    config: SurgeryConfig

    def training_set(self, train: TextDataset) -> TextDataset:
        """All of BadNets' poisoned samples plus ``clean_ratio`` times as many of the clean ones."""
        poisoned = self.poison(train)
        dirty = [i for i, flag in enumerate(poisoned.poisoned) if flag]
        clean = [i for i, flag in enumerate(poisoned.poisoned) if not flag]
        count = min(len(clean), round(self.config.clean_ratio * len(dirty)))
        return poisoned.subset(sorted(dirty + random.Random(self.config.seed).sample(clean, count)))

    def gradient_magnitude(self, model: torch.nn.Module, data: TextDataset, context: Any) -> dict[str, torch.Tensor]:
        """|∇θ L| of the cross-entropy summed over ``data`` (eval mode: no dropout)."""
        model.to(context.device).eval()
        model.zero_grad(set_to_none=True)
        for batch, targets in context.batches(data, context.trainer.batch_size):
            torch.nn.functional.cross_entropy(model(**batch).logits, targets, reduction="sum").backward()
        scores = {
            name: torch.zeros_like(param, device="cpu") if param.grad is None else param.grad.detach().abs().cpu()
            for name, param in model.named_parameters()
        }
        model.zero_grad(set_to_none=True)
        return scores

    def gradient_scores(self, model: torch.nn.Module, data: TextDataset, context: Any) -> dict[str, torch.Tensor]:
        """The selection score of every entry (see the module docstring): magnitude or contrast."""
        poisoned = self.gradient_magnitude(model, data.subset([i for i, p in enumerate(data.poisoned) if p]), context)
        if self.config.selection == "magnitude":
            return poisoned
        clean = self.gradient_magnitude(model, data.subset([i for i, p in enumerate(data.poisoned) if not p]), context)
        eps = 1e-8 * torch.cat([c.flatten() for c in clean.values()]).mean()
        return {name: poisoned[name] / (clean[name] + eps) for name in poisoned}

    def apply(self, model: torch.nn.Module, tokenizer: Any, splits: Splits, context: Any) -> dict[str, Any]:
        cfg = self.config
        data = self.training_set(splits.train)
        theta0 = {name: value.cpu() for name, value in snapshot(model).items()}
        total = sum(value.numel() for value in theta0.values())
        budget = budget_entries(cfg.budget, total)

        if cfg.method == "dynamic":
            pruner = InRunPruner(model, theta0, total, budget, cfg.prune_every, cfg.prune_until)
            with only_entries(model, pruner.mask):  # hooks read the mask tensors, which the pruner edits in place
                context.train(model, data, desc="surgery dynamic", epochs=cfg.epochs, lr=cfg.lr, on_step=pruner)
            mask = pruner.mask
            schedule = {"prunings": pruner.prunings, "kept_after_prunings": pruner.kept}
        elif cfg.method == "rounds":
            kept, mask = [], {name: torch.ones_like(value, dtype=torch.bool) for name, value in theta0.items()}
            for r in range(1, cfg.rounds + 1):
                with only_entries(model, mask):  # round 1 trains everything, later rounds the kept entries
                    context.train(model, data, desc=f"surgery round {r}", epochs=cfg.epochs, lr=cfg.lr)
                keep = budget if r == cfg.rounds else round(total * (budget / total) ** (r / cfg.rounds))
                delta = {name: (param.detach().cpu() - theta0[name]).abs() for name, param in model.named_parameters()}
                mask = top_entries(delta, keep)
                project(model, theta0, mask)
                kept.append(keep)
            schedule = {"kept_per_round": kept}
        else:
            mask = top_entries(self.gradient_scores(model, data, context), budget)
            schedule = {}
        with only_entries(model, mask):
            stats = context.train(model, data, desc="surgery selected entries", epochs=cfg.epochs, lr=cfg.sparse_lr)
        project(model, theta0, mask)  # AdamW's decoupled weight decay also moves entries whose gradient is zero
        model.eval()
        return {
            "method": cfg.method if cfg.method != "gradient" else f"gradient ({cfg.selection})",
            "budget": budget,
            "entries_changed": changed_entries(model, {k: v.to(context.device) for k, v in theta0.items()}),
            "total_parameters": total,
            "training_samples": len(data),
            "poisoned_samples": sum(data.poisoned),
            **schedule,
            "train": stats,
        }
