"""The optimizer group: Child-Tuning's masks, SAM's two-pass step in closed form, and per-defense optimizers."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import bdrun.context
import bdrun.training as training
from bdrun.errors import BdrunError
from bdrun.optimizers import OPTIMIZERS
from bdrun.optimizers.child_tuning import ChildTuningD
from bdrun.optimizers.sam import GASAMStep, SAMStep
from bdrun.pipeline import parse_experiment
from tests.conftest import compose_config
from tests.test_pipeline import keys, stages_for
from tests.test_training import MAX_LENGTH, setup  # noqa: F401  (fixture)


def train_with(setup, optimizer: dict) -> torch.nn.Module:  # noqa: F811
    tokenizer, pretrained, data = setup
    model = copy.deepcopy(pretrained)
    config = training.TrainerConfig(epochs=2, batch_size=8)
    training.train(
        model, tokenizer, data, OPTIMIZERS.build(optimizer), config,
        max_length=MAX_LENGTH, device=torch.device("cpu"), seed=7,
    )  # fmt: skip
    return model


def test_child_tuning_d_never_changes_entries_outside_its_mask(setup, monkeypatch) -> None:  # noqa: F811
    captured = {}
    real_prepare = ChildTuningD.prepare

    def spy(self, optimizer, model, losses):
        real_prepare(self, optimizer, model, losses)
        captured["optimizer"] = optimizer

    monkeypatch.setattr(ChildTuningD, "prepare", spy)
    before = {n: p.detach().clone() for n, p in setup[1].named_parameters()}
    # weight decay on: outside the child network even decay must not touch an entry
    model = train_with(setup, {"name": "child_tuning_d", "lr": 1e-3, "weight_decay": 0.1, "p": 0.3})
    optimizer = captured["optimizer"]

    masked = {id(p) for p in optimizer.masked}
    kept, total = 0, 0
    for name, param in model.named_parameters():
        moved = param.detach() != before[name]
        if id(param) not in masked:  # embeddings, pooler, classifier: trained normally
            assert ".layer." not in f".{name}"
            continue
        mask = optimizer.state[param]["mask"].bool()
        assert not moved[~mask].any(), f"{name}: an entry outside the child network changed"
        kept, total = kept + int(mask.sum()), total + mask.numel()
    assert masked and abs(kept / total - 0.3) < 0.01  # top-p of the Fisher, up to ties
    classifier = dict(model.named_parameters())["classifier.weight"]
    assert not torch.equal(classifier, before["classifier.weight"])


def test_child_tuning_f_keeps_the_asked_fraction_of_gradient_entries() -> None:
    layer = torch.nn.Linear(500, 400)
    optimizer, _ = OPTIMIZERS.build({"name": "child_tuning_f", "p": 0.3, "lr": 1e-3}).build(layer, total_steps=1)
    torch.manual_seed(0)

    def ones_gradient() -> torch.Tensor:
        optimizer.zero_grad()
        layer.weight.grad, layer.bias.grad = torch.ones_like(layer.weight), torch.ones_like(layer.bias)
        return torch.tensor(0.0)

    optimizer.step(ones_gradient)
    grad = layer.weight.grad
    kept = (grad != 0).float().mean().item()
    assert abs(kept - 0.3) < 4 * math.sqrt(0.3 * 0.7 / grad.numel())
    assert torch.allclose(grad[grad != 0], torch.full_like(grad[grad != 0], 1 / 0.3))  # scaled by 1/p


def quadratic_setup() -> tuple[torch.Tensor, torch.nn.Parameter]:
    a = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    return a, w


def closure_for(optimizer: torch.optim.Optimizer, a: torch.Tensor, w: torch.nn.Parameter):
    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = 0.5 * w @ a @ w
        value.backward()
        return value

    return loss


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_on_a_quadratic_equals_the_closed_form(adaptive: bool) -> None:
    a, w = quadratic_setup()
    w0, lr, rho = w.detach().clone(), 0.1, 0.05
    inner = torch.optim.SGD([w], lr=lr)
    optimizer = GASAMStep(inner, rho, beta=0.9) if adaptive else SAMStep(inner, rho)
    optimizer.step(closure_for(optimizer, a, w))

    g = a @ w0
    # GA-SAM's first step: the running mean of g² is g² itself, so the direction is sign(g)
    direction = torch.sign(g) if adaptive else g
    e = rho * direction / direction.norm()
    expected = w0 - lr * (a @ (w0 + e))
    assert torch.allclose(w.detach(), expected, atol=1e-12)


def test_ga_sam_second_step_uses_the_running_gradient_strength() -> None:
    a, w = quadratic_setup()
    lr, rho, beta = 0.1, 0.05, 0.9
    optimizer = GASAMStep(torch.optim.SGD([w], lr=lr), rho, beta)
    optimizer.step(closure_for(optimizer, a, w))
    w1 = w.detach().clone()
    g1 = a @ w1  # the gradient at the start of step 2
    first = optimizer.state[w]["grad_sq"].clone()  # (1 - beta) g0²
    optimizer.step(closure_for(optimizer, a, w))

    v = beta * first + (1 - beta) * g1**2
    d = g1 / (torch.sqrt(v / (1 - beta**2)) + 1e-12)
    expected = w1 - lr * (a @ (w1 + rho * d / d.norm()))
    assert torch.allclose(w.detach(), expected, atol=1e-12)


def test_defense_optimizer_trains_only_the_defense_with_it(tmp_path: Path, monkeypatch) -> None:
    plain = keys(["defense=fine_tuning"], tmp_path)
    override = ["defense=fine_tuning", "+optimizer@defense.optimizer=sam", "defense.optimizer.rho=0.1"]
    with_sam = keys(override, tmp_path)
    assert with_sam["train"] == plain["train"] and with_sam["poison"] == plain["poison"]
    assert with_sam["purify"] != plain["purify"]

    used = []
    monkeypatch.setattr(bdrun.context, "train", lambda model, tok, data, spec, *a, **k: used.append(spec.config) or {})
    stages = stages_for(override, tmp_path)
    splits = stages.splits
    stages.exp.defense.purify(torch.nn.Linear(1, 1), splits, stages.context(tmp_path))
    assert [(c.name, c.rho) for c in used] == [("sam", 0.1)]


def test_bad_defense_optimizer_knob_is_a_clear_error(tmp_path: Path) -> None:
    override = ["defense=fine_tuning", "+optimizer@defense.optimizer=child_tuning_d", "defense.optimizer.p=2"]
    cfg = compose_config(override)
    with pytest.raises(BdrunError, match=r"optimizer.p=2.0 must be in \(0, 1\]"):
        parse_experiment(cfg)


def test_adamw_runs_the_fused_kernel_with_the_reference_update() -> None:
    """optimizer=adamw builds torch's fused AdamW (about 4.5x faster per step on the CPU than the per-tensor loop,
    bdrun/optimizers/adamw.py) and its update is AdamW's: it matches the per-tensor reference, decay included."""
    torch.manual_seed(0)
    weights = [torch.randn(300, 40), torch.randn(40)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(5)]
    models = [[w.clone().requires_grad_() for w in weights] for _ in range(2)]
    groups = [[{"params": [m[0]], "weight_decay": 0.1}, {"params": [m[1]], "weight_decay": 0.0}] for m in models]
    fused = OPTIMIZERS.build({"name": "adamw", "lr": 1e-2, "weight_decay": 0.1}).make(groups[0])
    reference = torch.optim.AdamW(groups[1], lr=1e-2, foreach=False)
    assert fused.defaults["fused"] is True
    for step in grads:
        for params, optimizer in zip(models, (fused, reference), strict=True):
            for param, grad in zip(params, step, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    for ours, theirs, start in zip(models[0], models[1], weights, strict=True):
        assert not torch.equal(ours, start)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
