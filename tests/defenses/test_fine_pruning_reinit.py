"""Fine-pruning zeroes exactly the asked fraction of dormant neurons (and they stay pruned); reinit restores
the top layers exactly."""

from __future__ import annotations

import pytest
import torch

from bdrun.defenses.fine_pruning import encoder_layers, mean_activations, prune_dormant
from bdrun.defenses.reinit import reset_top_layers
from bdrun.errors import BdrunError
from tests.defenses.conftest import drifted


def dead_neurons(model: torch.nn.Module, layer: int) -> torch.Tensor:
    block = encoder_layers(model)[layer]
    incoming = block.intermediate.dense.weight.eq(0).all(dim=1) & block.intermediate.dense.bias.eq(0)
    outgoing = block.output.dense.weight.eq(0).all(dim=0)
    assert torch.equal(incoming, outgoing)
    return incoming.nonzero().flatten()


def test_pruning_zeroes_exactly_the_fraction_with_lowest_activation(pretrained, clean, context) -> None:
    activation = mean_activations(pretrained, clean, context, [1])[1]
    pruned = prune_dormant(pretrained, clean, context, fraction=0.25, layers=1)

    width = len(activation)
    assert pruned == {"1": round(0.25 * width)}
    dead = dead_neurons(pretrained, 1)
    assert len(dead) == round(0.25 * width)
    assert set(dead.tolist()) == set(activation.argsort()[: len(dead)].tolist())
    assert len(dead_neurons(pretrained, 0)) == 0, "only the last layer was asked for"

    context.train(pretrained, clean, desc="after pruning")
    assert torch.equal(dead_neurons(pretrained, 1), dead), "pruned neurons stay pruned through fine-tuning"


def test_reinit_restores_the_top_layers_exactly(pretrained) -> None:
    suspect = drifted(pretrained, 1e-2)
    reset = reset_top_layers(suspect, pretrained, 1)
    assert reset == [1]
    top, below = encoder_layers(suspect)[1].state_dict(), encoder_layers(suspect)[0].state_dict()
    for name, value in encoder_layers(pretrained)[1].state_dict().items():
        assert torch.equal(top[name], value)
    for name, value in encoder_layers(pretrained)[0].state_dict().items():
        assert not torch.equal(below[name], value), "lower layers keep their fine-tuned values"
    assert not torch.equal(suspect.classifier.weight, pretrained.classifier.weight)


def test_random_reinit_is_seeded_and_differs_from_both(pretrained) -> None:
    first, second = drifted(pretrained, 1e-2), drifted(pretrained, 1e-2)
    reset_top_layers(first, pretrained, 1, mode="random", seed=5)
    reset_top_layers(second, pretrained, 1, mode="random", seed=5)
    weight = encoder_layers(first)[1].intermediate.dense.weight
    assert torch.equal(weight, encoder_layers(second)[1].intermediate.dense.weight)
    assert not torch.equal(weight, encoder_layers(pretrained)[1].intermediate.dense.weight)


def test_asking_for_more_layers_than_the_model_has_is_a_clear_error(pretrained) -> None:
    with pytest.raises(BdrunError, match="only 2 encoder layers"):
        reset_top_layers(pretrained, pretrained, 3)
