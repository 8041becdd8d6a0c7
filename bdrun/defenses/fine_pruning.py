"""``defense=fine_pruning``: prune the FFN neurons that clean data leaves dormant, then fine-tune.

Fine-pruning (Liu et al., RAID 2018), the baseline the NLP purification papers compare with, transferred to
BERT's feed-forward blocks: a backdoor tends to recruit neurons that clean inputs do not use, so removing the
neurons with the lowest mean activation on clean data removes capacity the backdoor relies on, and
fine-tuning repairs the clean accuracy.

Choices (ours, as the baseline is not specified for transformers in the papers we follow):

- a neuron is one unit of a layer's intermediate (post-GELU) FFN activation; its score is the mean activation
  over the non-padding tokens of the clean set;
- in each of the last ``layers`` encoder layers (null: all), exactly round(``fraction`` × width) neurons with the
  lowest score are pruned;
- pruning zeroes the neuron's incoming weights and bias *and* its outgoing weights. Its activation is then
  GELU(0) = 0 and every gradient reaching it is zero, so it stays pruned through the fine-tuning without any
  mask in the training loop (weight decay keeps zeros at zero).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier, check_depth
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check


@dataclasses.dataclass
class FinePruningConfig(CleanDataConfig):
    fraction: float = 0.2  # share of FFN neurons pruned in each chosen layer
    layers: int | None = None  # prune in the last N encoder layers; null: every layer

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.fraction < 1, f"defense.fraction={self.fraction} must be in [0, 1)")
        check(self.layers is None or self.layers >= 1, f"defense.layers={self.layers} must be >= 1 (or null)")


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a BERT-family classifier."""
    return model.base_model.encoder.layer


@torch.no_grad()
def mean_activations(
    model: torch.nn.Module, clean: TextDataset, context: StageContext, layer_ids: list[int]
) -> dict[int, torch.Tensor]:
    """Per chosen layer: each FFN neuron's mean post-activation value over the clean set's real tokens."""
    layers = encoder_layers(model)
    sums = {i: torch.zeros(layers[i].intermediate.dense.out_features, device=context.device) for i in layer_ids}
    mask: list[torch.Tensor] = []  # the current batch's attention mask, read by the hooks

    def hook(index: int):
        def record(module, inputs, output) -> None:
            sums[index] += (output * mask[0].unsqueeze(-1)).sum(dim=(0, 1))

        return record

    handles = [layers[i].intermediate.register_forward_hook(hook(i)) for i in layer_ids]
    model.to(context.device).eval()
    tokens = 0
    try:
        for batch, _ in context.batches(clean):
            mask[:] = [batch["attention_mask"].float()]
            tokens += int(batch["attention_mask"].sum())
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {i: s / max(tokens, 1) for i, s in sums.items()}


@torch.no_grad()
def prune_neurons(model: torch.nn.Module, layer: int, neurons: torch.Tensor) -> None:
    """Zero the neurons' incoming weights and bias and their outgoing weights in one encoder layer."""
    block = encoder_layers(model)[layer]
    block.intermediate.dense.weight[neurons] = 0
    block.intermediate.dense.bias[neurons] = 0
    block.output.dense.weight[:, neurons] = 0


def prune_dormant(
    model: torch.nn.Module, clean: TextDataset, context: StageContext, fraction: float, layers: int | None
) -> dict[str, int]:
    """Prune the lowest-activation ``fraction`` of FFN neurons in each of the last ``layers`` layers (None: all)."""
    depth = len(encoder_layers(model))
    count = layers or depth
    check_depth("defense.layers", count, depth)
    pruned: dict[str, int] = {}
    for layer, activation in mean_activations(model, clean, context, list(range(depth - count, depth))).items():
        neurons = activation.argsort()[: round(fraction * len(activation))]
        prune_neurons(model, layer, neurons)
        pruned[str(layer)] = len(neurons)
    return pruned


@DEFENSES.register("fine_pruning", FinePruningConfig)
class FinePruning(Purifier):
    config: FinePruningConfig

    def check_model(self, depth: int) -> None:
        check_depth("defense.layers", self.config.layers, depth)

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        pruned = prune_dormant(model, clean, context, self.config.fraction, self.config.layers)
        return {"pruned_neurons": pruned, **self.fine_tune(model, clean, context, "fine-pruning")}
