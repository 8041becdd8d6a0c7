"""GradNorm (Chen et al. 2018) as a backdoor baseline: the task weights follow the paper's update rule (sum T = 2,
equal tasks stay equal, the task with the larger gradient norm or the faster-falling loss is weighted down), the
training step's gradient is ``Σ w_i(t) ∇L_i``, and the attack runs under adapters and LoRA with its weights in
metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.attacks.gradnorm import GradNormStep, gradnorm_update
from bdrun.data import load_splits
from bdrun.errors import BdrunError
from bdrun.pipeline import Stages, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config

SMALL = "dataset.max_samples={train:64,dev:16,test:32}"


def double(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_the_weights_always_sum_to_the_number_of_tasks_and_stay_positive() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = double(1.0, 1.0)
    for step in range(300):
        norms = torch.rand(2, generator=generator, dtype=torch.float64) * 10
        ratios = torch.rand(2, generator=generator, dtype=torch.float64) + 0.1
        lr = 5.0 if step % 7 == 0 else 0.05  # a step size far too large drives a weight to its floor
        weights = gradnorm_update(weights, norms, ratios, alpha=1.5, lr=lr)
        assert float(weights.sum()) == pytest.approx(2.0, abs=1e-12)
        assert bool((weights > 0).all())


def test_equal_loss_ratios_and_equal_gradient_norms_keep_the_weights_equal() -> None:
    weights = double(1.0, 1.0)
    for _ in range(50):
        weights = gradnorm_update(weights, double(3.0, 3.0), double(0.7, 0.7), alpha=1.5, lr=0.1)
    assert torch.equal(weights, double(1.0, 1.0))


def test_the_task_with_the_larger_gradient_norm_is_weighted_down_by_the_papers_rule() -> None:
    # G = w·n = (3, 1), Ḡ = 2, targets Ḡ·r^α = (2, 2) at equal loss ratios; ∂L_grad/∂w_i = sign(G_i − 2)·n_i = (3, −1).
    # w − 0.1·(3, −1) = (0.7, 1.1), renormalised to sum 2: (0.7, 1.1) · 2/1.8.
    updated = gradnorm_update(double(1.0, 1.0), double(3.0, 1.0), double(1.0, 1.0), alpha=1.5, lr=0.1)
    assert torch.allclose(updated, double(0.7, 1.1) * (2 / 1.8), atol=1e-12)
    assert updated[0] < 1 < updated[1]


def test_the_slower_task_gets_the_larger_target_and_alpha_zero_ignores_the_rates() -> None:
    # Equal norms; task 0's loss ratio is twice task 1's: r = (4/3, 2/3), targets Ḡ·r^α = (4/3, 2/3) at α = 1.
    updated = gradnorm_update(double(1.0, 1.0), double(1.0, 1.0), double(1.0, 0.5), alpha=1.0, lr=0.1)
    assert torch.allclose(updated, double(1.1, 0.9), atol=1e-12)
    assert torch.equal(gradnorm_update(double(1.0, 1.0), double(1.0, 1.0), double(1.0, 0.5), 0.0, 0.1), double(1, 1))


class TinyNet(torch.nn.Module):
    """One "encoder layer" (named ``encoder.layer.0``, as in BERT) and a head: W is the layer's weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList([torch.nn.Linear(3, 4)])
        self.classifier = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.encoder.layer[0](x))).squeeze(-1)


def test_the_step_trains_on_the_weighted_task_gradients_then_updates_the_weights() -> None:
    model = TinyNet()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])  # rows 4..7: the "poisoned" task, far off
    poisoned = [False] * 4 + [True] * 4

    def batch_loss(rows: list[int]) -> torch.Tensor:
        return ((model(x[rows]) - y[rows]) ** 2).mean()

    def task_gradients(rows: list[int]) -> list[torch.Tensor]:
        return list(torch.autograd.grad(batch_loss(rows), list(model.parameters())))

    config = ATTACKS.build({"name": "gradnorm", "weight_lr": 0.05}).config
    step = GradNormStep(model, poisoned, config)
    assert step.layer == 0 and len(step.shared) == 2  # encoder.layer.0.{weight,bias}
    clean, dirty = task_gradients([0, 1, 2, 3]), task_gradients([4, 5, 6, 7])
    losses = double(*(float(batch_loss(rows).detach()) for rows in ([0, 1, 2, 3], [4, 5, 6, 7])))
    logged = step(list(range(8)), batch_loss)
    for param, c, p in zip(model.parameters(), clean, dirty, strict=True):  # w(0) = (1, 1): the plain sum
        assert torch.allclose(param.grad, c + p, atol=1e-6)
    assert float(logged) == pytest.approx(float(losses.sum()) / 2, rel=1e-6)
    norms = double(*(float(torch.cat([g[i].flatten() for i in (0, 1)]).norm()) for g in (clean, dirty)))
    assert norms[1] > norms[0]  # the far-off task has the larger gradient on W ...
    expected = gradnorm_update(double(1.0, 1.0), norms, double(1.0, 1.0), alpha=1.5, lr=0.05)
    assert torch.allclose(step.weights, expected, atol=1e-9) and step.weights[1] < 1  # ... and is weighted down
    # The next step uses the updated weights.
    w = step.weights.clone()
    step(list(range(8)), batch_loss)
    clean, dirty = task_gradients([0, 1, 2, 3]), task_gradients([4, 5, 6, 7])
    for param, c, p in zip(model.parameters(), clean, dirty, strict=True):
        assert torch.allclose(param.grad, float(w[0]) * c + float(w[1]) * p, atol=1e-6)
    # A batch of one task trains it alone and leaves the weights as they are.
    before = step.weights.clone()
    logged = step([0, 1, 2], batch_loss)
    assert torch.equal(step.weights, before) and step.updates == 2 and step.steps == 3
    assert float(logged) == pytest.approx(float(batch_loss([0, 1, 2]).detach()), rel=1e-6)  # its own loss, logged


def test_the_history_stays_short_and_the_state_survives_a_checkpoint(tmp_path: Path) -> None:
    model = TinyNet()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0.0, 1.0, 3.0, 3.0])
    step = GradNormStep(model, [False, False, True, True], ATTACKS.build({"name": "gradnorm"}).config)
    for _ in range(300):
        step([0, 1, 2, 3], lambda rows: ((model(x[rows]) - y[rows]) ** 2).mean())
    steps = [entry[0] for entry in step.trace.entries]
    assert len(steps) <= 64 and steps == list(range(8, 301, 8)) and step.trace.stride == 8  # every 8th step by now
    torch.save(step.state_dict(), tmp_path / "state.pt")
    restored = GradNormStep(model, [False, False, True, True], step.config)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.diagnostics() == step.diagnostics() and torch.equal(restored.initial, step.initial)


def test_bad_knobs_and_federated_runs_are_refused() -> None:
    with pytest.raises(BdrunError, match=r"attack.alpha=-1.0 must be >= 0"):
        ATTACKS.build({"name": "gradnorm", "alpha": -1.0})
    with pytest.raises(BdrunError, match=r"attack.weight_lr=0.0 must be positive"):
        ATTACKS.build({"name": "gradnorm", "weight_lr": 0.0})
    with pytest.raises(BdrunError, match=r"attack=gradnorm trains with its own objective"):
        ATTACKS.build({"name": "gradnorm"}).check_federated()
    with pytest.raises(BdrunError, match=r"attack.layer=3 has no trainable parameters; use one of \[0\]"):
        GradNormStep(TinyNet(), [False], ATTACKS.build({"name": "gradnorm", "layer": 3}).config)


def test_gradnorm_trains_the_adapters_in_the_real_loop(tmp_path: Path) -> None:
    exp = parse_experiment(compose_config(["model.tuning=adapter", "attack=gradnorm", SMALL], cache_dir=tmp_path))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    poisoned = exp.attack.poison(stages.splits.train)
    model = stages.pretrained()
    stats = exp.attack.train(model, poisoned, stages.context(tmp_path / "work"))
    assert stats["steps"] == 4 and stats["gradnorm_layer"] == 1  # the top of the 2 layers
    assert stats["gradnorm_w_clean"] + stats["gradnorm_w_poison"] == pytest.approx(2.0, abs=1e-5)
    assert stats["gradnorm_updates"] >= 1 and stats["gradnorm_w_clean"] != 1.0  # the weights moved
    assert [entry[0] for entry in stats["gradnorm_history"]] == [1, 2, 3, 4]


def test_gradnorm_under_lora_writes_its_weights_to_metrics_json(tmp_path: Path) -> None:
    cfg = compose_config(["model.tuning=lora", "attack=gradnorm", "attack.poison_rate=0.3", SMALL], tmp_path / "c")
    report = run(parse_experiment(cfg), tmp_path / "run", NoTracker(TrackerConfig("none")))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["diagnostics"]["backdoored"]["attack"]
    assert saved == report["diagnostics"]["backdoored"]["attack"]
    assert saved["gradnorm_w_clean"] + saved["gradnorm_w_poison"] == pytest.approx(2.0, abs=1e-5)
    assert saved["gradnorm_updates"] == 4 and len(saved["gradnorm_history"]) == 4
