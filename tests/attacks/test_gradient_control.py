"""Gradient control (Gu et al. 2023): CLNorm's targets, ILProj's projections, the controlled step's
decomposition, and exact equality with vanilla poisoned PET training when both controls are off."""

from __future__ import annotations

from pathlib import Path

import torch

from bdrun.attacks import ATTACKS
from bdrun.attacks.gradient_control import (
    GradientController,
    clnorm_targets,
    clnorm_update,
    ilproj,
    project_off,
)
from bdrun.batching import collate, encode
from bdrun.data import load_splits
from bdrun.pipeline import Stages, parse_experiment
from tests.conftest import compose_config

SMALL = "dataset.max_samples={train:64,dev:16,test:32}"


def test_clnorm_targets_are_zero_at_the_output_layer_and_grow_toward_the_input() -> None:
    magnitudes = torch.tensor([0.3, 2.0, 0.1, 0.7, 1.1, 0.4], dtype=torch.float64)  # index 0 = input side
    targets = clnorm_targets(magnitudes)
    assert targets[-1] == 0
    assert bool((targets[:-1] > targets[1:]).all())  # strictly larger at every step down the stack
    assert torch.isclose(targets.mean(), magnitudes.mean())  # redistributed, not grown
    # One update moves every weighted magnitude toward its target.
    weights = torch.ones(6, dtype=torch.float64)
    updated = clnorm_update(weights, magnitudes, alpha=0.1)
    assert bool(((updated * magnitudes - targets).abs() < (weights * magnitudes - targets).abs()).all())
    # Repeated, the output layer's weight decays toward 0, the input layer's grows; none turns negative.
    for _ in range(200):
        weights = clnorm_update(weights, magnitudes, alpha=1.0)
        assert bool((weights >= 0).all())
    assert weights[-1] < 1e-12 and weights[0] > 1
    assert clnorm_update(torch.ones(2), torch.tensor([1.0, 5.0]), alpha=1.0)[1] == 0  # 1 - 25 clamped at 0


def test_ilproj_removes_each_gradients_component_along_the_other() -> None:
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(50, generator=generator, dtype=torch.float64)
    poison = -0.5 * clean + torch.randn(50, generator=generator, dtype=torch.float64)  # conflicting
    assert clean.dot(poison) < 0
    clean_hat, poison_hat = project_off(clean, poison), project_off(poison, clean)
    assert abs(float(clean_hat.dot(poison))) < 1e-10 * float(clean.norm() * poison.norm())
    assert abs(float(poison_hat.dot(clean))) < 1e-10 * float(clean.norm() * poison.norm())
    assert torch.allclose(ilproj(clean, poison, beta=0.0), clean_hat + poison_hat)
    assert torch.equal(ilproj(clean, poison, beta=1.0), clean + poison)
    assert torch.allclose(ilproj(clean, poison, beta=0.25), 0.75 * (clean_hat + poison_hat) + 0.25 * (clean + poison))
    # conflict_only (PCGrad's rule) leaves agreeing gradients alone; a zero gradient projects nothing.
    assert torch.equal(ilproj(clean, clean * 2, beta=0.0, conflict_only=True), clean * 3)
    assert torch.equal(project_off(clean, torch.zeros(50, dtype=torch.float64)), clean)


def test_the_controlled_step_splits_the_batch_into_two_tasks_that_sum_to_the_mixed_gradient(tmp_path: Path) -> None:
    exp = parse_experiment(compose_config(["model.tuning=lora", SMALL], cache_dir=tmp_path))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    attack = ATTACKS.build({"name": "gradient_control", "poison_rate": 0.3, "clnorm": False, "beta_upper": 1.0})
    data = attack.poison(stages.splits.train)
    model = stages.pretrained().eval()  # no dropout: both ways see the same network
    encoded = encode(stages.tokenizer, data.texts, 32)

    def batch_loss(rows: list[int]) -> torch.Tensor:
        batch = collate([encoded[i] for i in rows], stages.tokenizer.pad_token_id, torch.device("cpu"))
        return model(**batch, labels=torch.tensor([data.labels[i] for i in rows])).loss

    rows = list(range(16))
    assert 0 < sum(data.poisoned[i] for i in rows) < 16
    controller = GradientController(model, data.poisoned, attack.config)
    assert len(controller.layers) == 2 and controller.betas == [1.0, 1.0]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert {names[i] for i in controller.others} == {"classifier.weight", "classifier.bias"}
    controller(rows, batch_loss)  # β = 1 everywhere and CLNorm off: the plain sum of the two tasks
    split = [p.grad.clone() for p in controller.params]
    model.zero_grad()
    batch_loss(rows).backward()
    for name, a, p in zip(names, split, controller.params, strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4), name


def test_both_controls_off_is_exactly_vanilla_poisoned_pet_training(tmp_path: Path) -> None:
    def poisoned_model(*overrides: str) -> dict[str, torch.Tensor]:
        exp = parse_experiment(compose_config(["model.tuning=lora", SMALL, *overrides], cache_dir=tmp_path))
        stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
        return stages.load(stages.poison(stages.train_clean())).state_dict()

    vanilla = poisoned_model("attack=badnets")
    off = poisoned_model("attack=gradient_control", "attack.clnorm=false", "attack.ilproj=false")
    on = poisoned_model("attack=gradient_control")
    for name, tensor in vanilla.items():
        assert torch.equal(tensor, off[name]), name
    assert any(not torch.equal(tensor, on[name]) for name, tensor in vanilla.items())
