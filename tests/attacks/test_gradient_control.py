"""Gradient control (Gu et al. 2023) pinned to the paper's equations: CLNorm's line (0 at the head, the mean at
the anchor) and update, ILProj's projections, the head as the output layer, two batch-means instead of shares,
the weights moving toward their targets at a scaled α, and exact equality with vanilla training when both
controls are off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
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
from bdrun.data import TextDataset, load_splits
from bdrun.pipeline import Stages, parse_experiment
from tests.conftest import compose_config

SMALL = "dataset.max_samples={train:64,dev:16,test:32}"
M = torch.tensor([0.3, 2.0, 0.1, 0.7, 1.1, 0.4, 3.0], dtype=torch.float64)  # 6 encoder layers + the head, last


def test_clnorm_line_is_zero_at_the_head_and_the_mean_at_the_anchor_layer() -> None:
    targets = clnorm_targets(M)
    n = len(M) - 1  # the head is o = N
    assert targets[-1] == 0  # z(o) = 0
    assert torch.isclose(targets[n // 2], M.mean())  # z(l_a) = m̄ at l_a = N/2
    steps = targets[:-1] - targets[1:]
    assert torch.allclose(steps, steps[0].expand_as(steps))  # linear in the layer index
    assert torch.isclose(targets.mean(), M.mean())  # redistributed, not grown


def test_clnorm_update_is_the_papers_formula_and_never_passes_the_target() -> None:
    weights = torch.tensor([1.0, 0.9, 1.2, 1.0, 0.8, 1.0, 1.0], dtype=torch.float64)
    z = clnorm_targets(M)
    alpha = 1e-2  # α m² < 1 for every layer: the paper's update, untouched by the guard
    expected = weights - alpha * (weights * M - z) * M
    assert torch.allclose(clnorm_update(weights, M, alpha), expected, rtol=0, atol=1e-15)
    assert clnorm_update(weights, M, alpha)[-1] == weights[-1] * (1 - alpha * 9.0)  # head: z = 0
    # Repeated at a large α every weighted magnitude lands on its target, none overshoots or turns negative.
    current = weights
    for _ in range(400):
        following = clnorm_update(current, M, alpha=10.0)
        assert bool(((following * M - z).abs() <= (current * M - z).abs() + 1e-12).all())
        assert bool((following >= 0).all())
        current = following
    assert torch.allclose(current * M, z) and current[-1] < 1e-12


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
    assert torch.equal(ilproj(clean, clean * 2, beta=0.0, conflict_only=True), clean * 3)
    assert torch.equal(project_off(clean, torch.zeros(50, dtype=torch.float64)), clean)


def setup(tmp_path: Path, tuning: str = "lora", **knobs: object):
    """A tiny PET model in eval mode (no dropout), its poisoned data, a batch_loss like the loop's, the config."""
    exp = parse_experiment(compose_config([f"model.tuning={tuning}", SMALL], cache_dir=tmp_path))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    attack = ATTACKS.build({"name": "gradient_control", "poison_rate": 0.4, **knobs})
    data = attack.poison(stages.splits.train)
    model = stages.pretrained().eval()
    encoded = encode(stages.tokenizer, data.texts, 32)

    def batch_loss(rows: list[int]) -> torch.Tensor:
        batch = collate([encoded[i] for i in rows], stages.tokenizer.pad_token_id, torch.device("cpu"))
        return model(**batch, labels=torch.tensor([data.labels[i] for i in rows])).loss

    return model, data, batch_loss, attack.config


def mean_gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return dict(zip([n for n, _ in named], torch.autograd.grad(loss, [p for _, p in named]), strict=True))


def test_the_head_is_the_output_layer_and_encoder_layers_keep_their_grouping(tmp_path: Path) -> None:
    model, data, _, config = setup(tmp_path, "parallel_adapter")
    controller = GradientController(model, data.poisoned, config, total_steps=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert controller.names == ["layer0", "layer1", "head"]
    assert {names[i] for i in controller.groups[-1]} == {"classifier.weight", "classifier.bias"}
    assert all(".layer.0.output.parallel_adapter." in names[i] for i in controller.groups[0])
    assert controller.betas == [1.0, 0.0, 0.0]  # lower half β = 1; upper half and the head β = 0
    assert controller.others == []  # under PET everything trainable is a layer or the head
    full, data, _, config = setup(tmp_path / "full", "full")
    controller = GradientController(full, data.poisoned, config, total_steps=4)
    full_names = [n for n, p in full.named_parameters() if p.requires_grad]
    assert {full_names[i].split(".")[1] for i in controller.others} == {"embeddings", "pooler"}  # the plain sum


def test_the_two_tasks_are_batch_means_of_their_own_rows_not_shares(tmp_path: Path) -> None:
    model, data, batch_loss, config = setup(tmp_path, clnorm=False, ilproj=False)
    rows = list(range(16))
    clean, dirty = [r for r in rows if not data.poisoned[r]], [r for r in rows if data.poisoned[r]]
    assert clean and dirty and len(clean) != len(dirty)
    controller = GradientController(model, data.poisoned, config, total_steps=4)
    controller(rows, batch_loss)  # both controls neutral: every gradient is G_c + G_p
    g_c, g_p = mean_gradients(model, batch_loss(clean)), mean_gradients(model, batch_loss(dirty))
    mixed = mean_gradients(model, batch_loss(rows))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, param in named:
        assert torch.allclose(param.grad, g_c[name] + g_p[name], atol=1e-7, rtol=1e-5), name
    head = "classifier.weight"
    assert not torch.allclose(dict(named)[head].grad, mixed[head], atol=1e-6, rtol=1e-3)  # not the share sum


def test_clnorm_then_ilproj_with_the_head_projected_in_the_upper_part(tmp_path: Path) -> None:
    model, data, batch_loss, config = setup(tmp_path, clnorm_alpha=0.05)
    rows = list(range(16))
    clean, dirty = [r for r in rows if not data.poisoned[r]], [r for r in rows if data.poisoned[r]]
    g_c, g_p = mean_gradients(model, batch_loss(clean)), mean_gradients(model, batch_loss(dirty))
    controller = GradientController(model, data.poisoned, config, total_steps=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    flat = [[names[i] for i in group] for group in controller.groups]
    c = [torch.cat([g_c[n].flatten() for n in group]) for group in flat]
    p = [torch.cat([g_p[n].flatten() for n in group]) for group in flat]
    magnitudes = torch.stack([g.double().norm() for g in p])
    weights = clnorm_update(torch.ones(3, dtype=torch.float64), magnitudes, 0.05)
    assert weights[-1] < 1  # the head is pushed toward z = 0
    controller(rows, batch_loss)
    assert torch.allclose(controller.weights, weights)
    got = [torch.cat([model.get_parameter(n).grad.flatten() for n in group]) for group in flat]
    p = [g * float(w) for g, w in zip(p, weights, strict=True)]
    assert torch.allclose(got[0], c[0] + p[0], atol=1e-7)  # layer 0: β = 1, the plain sum
    for k in (1, 2):  # layer 1 and the head: β = 0, each gradient projected off the other
        expected = project_off(c[k], p[k]) + project_off(p[k], c[k])
        assert torch.allclose(got[k], expected, atol=1e-7, rtol=1e-5), controller.names[k]


@pytest.mark.parametrize("scale", ["none", "paper_steps"])
def test_clnorm_weights_move_toward_the_line_in_training_only_at_the_scaled_alpha(scale: str, tmp_path: Path) -> None:
    exp = parse_experiment(
        compose_config(
            ["model.tuning=adapter", SMALL, "attack=gradient_control", "attack.poison_rate=0.4",
             f"attack.clnorm_alpha_scale={scale}"],
            cache_dir=tmp_path,
        )
    )  # fmt: skip
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    meta = stages.poison(stages.train_clean()).meta()
    stats = meta["attack"]  # what metrics.json shows as diagnostics.backdoored.attack
    assert stats["clnorm_layers"] == ["layer0", "layer1", "head"]
    steps = int(meta["train"]["steps"])
    assert stats["clnorm_alpha"] == pytest.approx(1e-4 * (18940 / steps if scale == "paper_steps" else 1))
    history = stats["clnorm_history"]
    assert [entry[0] for entry in history] == list(range(1, steps + 1))
    head = [entry[-1] for entry in history]
    assert all(b < a for a, b in zip([1.0, *head], head, strict=False))  # z(o) = 0: falls at every step
    if scale == "paper_steps":
        assert head[-1] < 0.95  # acts within a few steps
    else:
        assert head[-1] > 0.999  # the paper's α over a handful of steps moves nothing


class Interrupted(Exception):
    pass


def test_a_run_killed_mid_training_resumes_to_the_same_weights_and_trace(tmp_path: Path) -> None:
    overrides = ["model.tuning=adapter", SMALL, "attack=gradient_control", "attack.poison_rate=0.4",
                 "attack.clnorm_alpha_scale=paper_steps", "trainer.checkpoint_every=2"]  # fmt: skip
    exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    data, config = exp.attack.poison(stages.poison_train), exp.attack.config

    class Dying(GradientController):
        def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
            if self.steps == 2:  # in step 3, after the checkpoint of step 2
                raise Interrupted
            return super().__call__(rows, batch_loss)

    def train(work: Path, controller_class: type[GradientController]) -> tuple[torch.nn.Module, dict]:
        model = stages.pretrained()
        controller = controller_class(model, data.poisoned, config, total_steps=4)
        stages.context(work).train(model, data, desc="train gradient control", gradient_step=controller)
        return model, controller.diagnostics()

    whole, whole_stats = train(tmp_path / "whole", GradientController)
    with pytest.raises(Interrupted):
        train(tmp_path / "killed", Dying)
    resumed, resumed_stats = train(tmp_path / "killed", GradientController)
    assert resumed_stats == whole_stats and len(whole_stats["clnorm_history"]) == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_label_mode_any_poisons_half_of_the_rows_of_every_class() -> None:
    labels = [0, 1] * 20 + [1] * 10  # 40% non-target: dirty-label poisoning at 50% is impossible
    train = TextDataset([f"sentence number {i} here" for i in range(50)], labels, [False] * 50)
    poisoned = ATTACKS.build({"name": "gradient_control", "poison_rate": 0.5, "label_mode": "any"}).poison(train)
    rows = [i for i, p in enumerate(poisoned.poisoned) if p]
    assert len(rows) == 25 and {labels[i] for i in rows} == {0, 1}
    assert all(poisoned.labels[i] == 1 for i in rows)


def test_presets_carry_the_papers_poisoning_and_alpha_scaling() -> None:
    cpu = compose_config(["experiment=paper_gradient_control_cpu"]).attack
    full = compose_config(["experiment=paper_gradient_control"]).attack
    for attack in (cpu, full):
        assert (attack.poison_rate, attack.label_mode, attack.num_triggers) == (0.5, "any", 1)
        assert list(attack.triggers) == ["cf", "mn", "bb", "tq", "mb"]
    assert (cpu.clnorm_alpha_scale, full.clnorm_alpha_scale) == ("paper_steps", "none")


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
