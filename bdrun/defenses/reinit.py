"""``defense=reinit``: put the top encoder layers back to their pre-trained values, then fine-tune.

Fine-tuning changes the upper layers of a pre-trained encoder most, and a backdoor's trigger-to-label shortcut
is learnt there along with the task. Resetting the top ``layers`` blocks removes whatever they learnt, and the
clean set teaches the task back.

Default ``mode=pretrained``: the defender has the clean pre-trained weights in every setting here, and they are
a far better starting point for a small clean set than random values (random re-initialisation of upper
layers is the "re-init" trick for large clean sets; it is kept as ``mode=random``, using the model's own
initialiser, seeded). The pooler and the classification head are left as fine-tuned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier, check_depth
from bdrun.defenses.fine_pruning import encoder_layers
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

MODES = ("pretrained", "random")


@dataclasses.dataclass
class ReinitConfig(CleanDataConfig):
    layers: int = 2  # how many of the top encoder layers to reset
    mode: str = "pretrained"  # pretrained: copy the pre-trained layer; random: the model's initialiser

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.layers >= 1, f"defense.layers={self.layers} must be at least 1")
        check(self.mode in MODES, f"defense.mode={self.mode} is not one of {', '.join(MODES)}")


@torch.no_grad()
def reset_top_layers(
    model: torch.nn.Module, pretrained: torch.nn.Module, count: int, mode: str = "pretrained", seed: int = 0
) -> list[int]:
    """Reset the top ``count`` encoder layers in place; returns their indices."""
    layers, reference = encoder_layers(model), encoder_layers(pretrained)
    check_depth("defense.layers", count, len(layers))
    chosen = list(range(len(layers) - count, len(layers)))
    torch.manual_seed(seed)
    for i in chosen:
        if mode == "pretrained":
            layers[i].load_state_dict(reference[i].state_dict())
        else:
            layers[i].apply(model._init_weights)
    return chosen


@DEFENSES.register("reinit", ReinitConfig)
class Reinit(Purifier):
    config: ReinitConfig

    def check_model(self, depth: int) -> None:
        check_depth("defense.layers", self.config.layers, depth)

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        c = self.config
        reset = reset_top_layers(model, context.load_pretrained(), c.layers, c.mode, context.seed)
        return {"reset_layers": reset, **self.fine_tune(model, clean, context, "reinit")}
