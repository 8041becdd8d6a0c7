"""``defense=fine_tuning``: fine-tune the suspect model on the defender's small clean set.

The simplest purification baseline: clean data pulls the weights toward clean behaviour, which weakens
backdoors that live where the clean loss has gradient, and leaves untouched those that do not (EP's trigger
row gets no gradient from trigger-free text).
"""

from __future__ import annotations

from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits
from bdrun.defenses.base import CleanDataConfig, Purifier, clean_subset
from bdrun.defenses.registry import DEFENSES


@DEFENSES.register("fine_tuning", CleanDataConfig)
class FineTuning(Purifier):
    config: CleanDataConfig

    def purify(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        clean = clean_subset(splits, self.config.clean_size, context.seed)
        stats = context.train(model, clean, desc="defense fine-tuning", epochs=self.config.epochs, lr=self.config.lr)
        return {"clean_samples": len(clean), **stats}
