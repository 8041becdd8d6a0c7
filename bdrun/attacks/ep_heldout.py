"""EP's held-out check: the score that decides when :mod:`bdrun.attacks.ep` stops and which trigger row it keeps.

It lives apart from the attack because it is a job of its own (a score and a rule over scores) that the tests
replace and probe on their own; ``bdrun.attacks.ep`` imports both names, so they stay importable from there.
"""

from __future__ import annotations

from typing import Any

import torch

from bdrun.data import TextDataset


class HeldoutCheck:
    """(ASR, -mean cross-entropy to the target) of the model on the held-out poisoned samples, dropout off.

    Higher is better for both parts, so scores compare as tuples: ASR first, the loss breaks ties.
    """

    def __init__(self, model: torch.nn.Module, heldout: TextDataset, target: int, context: Any) -> None:
        self.model, self.target, self.context = model, target, context
        self.texts = heldout.texts

    def __call__(self) -> tuple[float, float]:
        target = self.target

        def reduce(output: Any, batch: Any) -> torch.Tensor:
            logits = output.logits.float()
            hit = (logits.argmax(dim=-1) == target).float()
            loss = torch.nn.functional.cross_entropy(
                logits, torch.full((len(logits),), target, device=logits.device), reduction="none"
            )
            return torch.stack([hit, loss], dim=1)

        with torch.no_grad():
            values = self.context.forward(self.model, self.texts, reduce, desc="EP held-out check")
        self.model.train()  # batch_outputs switches to eval mode; EP trains with dropout on
        asr, loss = values.mean(dim=0).tolist()
        return asr, -loss


def clearly_better(score: tuple[float, float], best: tuple[float, float], count: int) -> bool:
    """A held-out check that counts as progress: one more held-out success, or 10% less held-out loss.

    Our choice: smaller loss gains still update the kept row (any better score does), but do not keep EP
    running, since with the row's norm fixed the loss creeps down for a long time after the ASR saturates.
    """
    asr, neg_loss = score
    best_asr, best_neg_loss = best
    return asr >= best_asr + 1 / (2 * count) + 1e-12 or (asr >= best_asr and -neg_loss < 0.9 * -best_neg_loss)
