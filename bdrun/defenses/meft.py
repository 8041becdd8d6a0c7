"""``defense=meft``: the maximum-entropy loss against backdoors, in two readings (``defense.mode``).

MEFT (Liu et al., Findings of ACL 2023, "Maximum Entropy Loss, the Silver Bullet Targeting Backdoor Attacks").
A backdoor is a low-cross-entropy mapping learnt from poisoned data. Training the suspect toward uniform
predictions on clean inputs (maximum entropy) flattens the confident decision function, the trigger's shortcut
included; a second phase with ordinary cross-entropy on the same clean set then rebuilds the clean task, which
the poisoned data is no longer there to rebuild the backdoor with.

Both phases go through the shared training loop (:func:`bdrun.training.train`); phase 1 passes its own loss.

Only the abstract could be read here (the full text was searched for and not found, issue 14). It says "maximum
entropy loss is incorporated in training to neutralize the minimal cross-entropy loss fine-tuning on poisoned
data", which admits two readings, both implemented:

``mode=training`` (the abstract's more literal reading): the victim's *own* training, on its own (possibly
poisoned) training set, minimises cross-entropy plus ``entropy_weight`` × a maximum-entropy loss, and needs no
clean set. Under a data-poisoning attack that training starts from the pre-trained weights on the poisoned
training set (:attr:`StageContext.victim_train`), i.e. it replaces the victim's poisoned fine-tuning; under a
model-editing attack (EP, surgery), whose victim receives a finished model, it fine-tunes that suspect model on
the clean training set. Epochs and lr: ``epochs`` / ``lr`` of this defense (null lr: the run's). Our choices
where the abstract is silent: the weight (1.0), the loss form (``entropy_loss``, below), one combined loss from
the first step.

``mode=posthoc`` (our earlier reading, the default until the table is rerun):

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
MODES = ("posthoc", "training")


@dataclasses.dataclass
class MeftConfig(CleanDataConfig):
    entropy_epochs: int = 1  # phase 1: epochs of the maximum-entropy loss
    entropy_lr: float | None = None  # phase 1 lr; null: the optimizer group's lr
    entropy_loss: str = "uniform_ce"  # uniform_ce: cross-entropy to uniform; entropy: minus the entropy
    mode: str = "posthoc"  # posthoc: max-entropy phase then clean recovery; training: CE + weighted max-entropy
    entropy_weight: float = 1.0  # training: weight of the max-entropy loss next to the cross-entropy

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.mode in MODES, f"defense.mode={self.mode} is not supported; use {' or '.join(MODES)}")
        check(self.entropy_weight >= 0, f"defense.entropy_weight={self.entropy_weight} must be >= 0")
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


def combined_loss(entropy_loss: str, weight: float):
    """Cross-entropy to the labels plus ``weight`` × the maximum-entropy loss (``mode=training``)."""
    maxent = LOSSES[entropy_loss]

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels) + weight * maxent(logits, labels)

    return loss


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
        if c.mode == "training":
            return self.train_with_max_entropy(model, splits, context)
        before = mean_entropy(model, clean, context)
        entropy_phase = maximize_entropy(model, clean, context, c.entropy_epochs, c.entropy_lr, c.entropy_loss)
        after = mean_entropy(model, clean, context)
        recovery = self.fine_tune(model, clean, context, "meft recovery")
        entropy = {"suspect": before, "after_entropy_phase": after}
        return {"clean_entropy": entropy, "entropy_phase": entropy_phase, **recovery}

    def train_with_max_entropy(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        """``mode=training``: the victim's own training with CE + weighted max-entropy; no clean set is used."""
        c = self.config
        data = context.victim_train if context.victim_train is not None else splits.train
        poisoned = any(data.poisoned)
        victim = context.load_pretrained() if poisoned else model  # a data-poisoned victim trains from scratch
        stats = context.train(
            victim,
            data,
            desc="meft training",
            epochs=c.epochs,
            lr=c.lr,
            loss_fn=combined_loss(c.entropy_loss, c.entropy_weight),
        )
        if victim is not model:
            model.load_state_dict(victim.state_dict())
        return {
            "mode": "training",
            "start": "pretrained" if poisoned else "suspect",
            "train_samples": len(data),
            "poisoned_samples": sum(data.poisoned),
            "clean_entropy": mean_entropy(model, splits.dev, context),
            **stats,
        }
