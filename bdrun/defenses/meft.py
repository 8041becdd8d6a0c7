"""``defense=meft``: maximum-entropy fine-tuning, then clean recovery.

MEFT (Liu et al., Findings of ACL 2023, "Maximum Entropy Loss, the Silver Bullet Targeting Backdoor Attacks").
A backdoor is a low-cross-entropy mapping learnt from poisoned data. Training the suspect toward uniform
predictions on clean inputs (maximum entropy) flattens the confident decision function, the trigger's shortcut
included; a second phase with ordinary cross-entropy on the same clean set then rebuilds the clean task, which
the poisoned data is no longer there to rebuild the backdoor with.

Both phases go through the shared training loop (:func:`bdrun.training.train`); phase 1 passes its own loss.

Our reading, not confirmed from the paper's full text (only its abstract could be read here):

- two sequential phases on the defender's clean set: ``entropy_epochs`` of the max-entropy loss (lr
  ``entropy_lr``), then ``epochs`` of cross-entropy (lr ``lr``); no weighting between them;
- ``entropy_loss=uniform_ce`` (default) is the cross-entropy to the uniform distribution, −mean_c log p_c,
  which is minimal exactly at uniform predictions and keeps a strong gradient on confident ones;
  ``entropy_loss=entropy`` minimises −H(p) directly, whose gradient vanishes on confident predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

ENTROPY_LOSSES = ("uniform_ce", "entropy")


@dataclasses.dataclass
class MeftConfig(CleanDataConfig):
    entropy_epochs: int = 1  # phase 1: epochs of the maximum-entropy loss
    entropy_lr: float | None = None  # phase 1 lr; null: the optimizer group's lr
    entropy_loss: str = "uniform_ce"  # uniform_ce: cross-entropy to uniform; entropy: minus the entropy

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.entropy_epochs >= 1, f"defense.entropy_epochs={self.entropy_epochs} must be at least 1")
        check(self.entropy_lr is None or self.entropy_lr > 0, f"defense.entropy_lr={self.entropy_lr} must be > 0")
        check(
            self.entropy_loss in ENTROPY_LOSSES,
            f"defense.entropy_loss={self.entropy_loss} is not one of {', '.join(ENTROPY_LOSSES)}",
        )


def uniform_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution (labels unused): minimal at uniform predictions."""
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def negative_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−H(softmax(logits)), averaged over the batch (labels unused)."""
    log_p = F.log_softmax(logits, dim=-1)
    return (log_p.exp() * log_p).sum(dim=-1).mean()


LOSSES = {"uniform_ce": uniform_cross_entropy, "entropy": negative_entropy}


@torch.no_grad()
def mean_entropy(model: torch.nn.Module, data: TextDataset, context: StageContext) -> float:
    """Mean prediction entropy (nats) over ``data``: the quantity phase 1 raises."""
    model.to(context.device).eval()
    total = 0.0
    for batch, _ in context.batches(data):
        total += -negative_entropy(model(**batch).logits.float(), None) * len(batch["input_ids"])
    return float(total) / len(data)


def maximize_entropy(
    model: torch.nn.Module, clean: TextDataset, context: StageContext, epochs: int, lr: float | None, loss: str
) -> dict[str, float]:
    """Phase 1: push the model's predictions on the clean set toward uniform."""
    return context.train(model, clean, desc="meft max-entropy", epochs=epochs, lr=lr, loss_fn=LOSSES[loss])


@DEFENSES.register("meft", MeftConfig)
class Meft(Purifier):
    config: MeftConfig

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        c = self.config
        before = mean_entropy(model, clean, context)
        entropy_phase = maximize_entropy(model, clean, context, c.entropy_epochs, c.entropy_lr, c.entropy_loss)
        after = mean_entropy(model, clean, context)
        recovery = self.fine_tune(model, clean, context, "meft recovery")
        entropy = {"suspect": before, "after_entropy_phase": after}
        return {"clean_entropy": entropy, "entropy_phase": entropy_phase, **recovery}
