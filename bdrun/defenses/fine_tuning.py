"""``defense=fine_tuning``: fine-tune the suspect model on the defender's small clean set.

The simplest purification baseline: clean data pulls the weights toward clean behaviour, which weakens
backdoors that live where the clean loss has gradient, and leaves untouched those that do not (EP's trigger
row gets no gradient from trigger-free text).
"""

from __future__ import annotations

from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier
from bdrun.defenses.registry import DEFENSES


@DEFENSES.register("fine_tuning", CleanDataConfig)
class FineTuning(Purifier):
    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        return self.fine_tune(model, clean, context, "defense fine-tuning")
