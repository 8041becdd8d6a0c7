"""``attack=gradnorm``: BadNets' poisoning trained with GradNorm's loss balancing (Chen et al., ICML 2018).

Gu et al. (ACL 2023) compare gradient control against GradNorm, a multitask method, with backdoor injection
seen as two tasks: the clean data (task 0) and the poisoned data (task 1). The network minimises
``L = Σ_i w_i L_i``; the task weights ``w_i`` are learnt so that each task's gradient norm on a chosen shared
layer ``W`` follows the tasks' training rates (section 3 and Algorithm 1 of the GradNorm paper):

- ``G_i = ‖∇_W w_i L_i‖₂`` and ``Ḡ`` its mean over tasks;
- ``L̃_i = L_i(t) / L_i(0)`` (loss ratio, the inverse training rate) and ``r_i = L̃_i / mean_j L̃_j``;
- ``L_grad = Σ_i |G_i − Ḡ · r_i^α|``, differentiated with respect to the ``w_i`` only, the targets
  ``Ḡ · r_i^α`` held constant; one gradient step on the ``w_i``, then ``w`` is renormalised so that
  ``Σ_i w_i = T`` (the number of tasks, 2); ``w_i(0) = 1``.

A task with a larger gradient norm than the others gets its weight lowered; one whose loss falls more slowly
(a larger ratio) gets a larger target, so its weight rises. The asymmetry ``α`` sets how strongly.

Poisoning is BadNets' (same knobs and rows; ``attack.source`` for the PET transfer threat model). Choices:

- **The two tasks' batches.** Each step of the common loop's seeded batch is split into its clean rows and its
  poisoned rows, and each task's loss is the mean over its own rows (not a share of the batch's mean, which
  would shrink the poisoned gradient by the poison rate). The data order, epochs and checkpoints stay the
  common trainer's; at the paper's 50% poison rate the two tasks get about half a batch each. A batch with
  rows of one task only trains that task with its current weight and leaves the weights unchanged.
- **The shared layer W** is the trainable parameters of one encoder layer (names with ``.layer.<i>.``: its
  adapters or LoRA matrices under PET, the whole layer under full tuning), by default the top one
  (``attack.layer=null``): the last layer of weights both tasks share before the classification head, as the
  paper recommends the last shared layer to save compute. The head is shared too, but it is the output layer
  that the user's retraining rewrites first, so we balance on the last layer the backdoor can keep.
- **α = 1.5**, the paper's value for its NYUv2 experiments (its synthetic experiments use 0.12). The weights
  take plain gradient steps of size ``attack.weight_lr`` = 0.025; we found no separate value for it in the
  paper. ``L_grad``'s derivative is exact and cheap here: ``G_i = w_i n_i`` is linear in ``w_i``
  (``n_i = ‖∇_W L_i‖``), so ``∂L_grad/∂w_i = sign(G_i − target_i) · n_i`` (no second backward pass). A weight
  is floored at 1e-6 before the renormalisation: a negative weight would train its task backwards, and the
  paper does not say what to do with one.
- **Order** as Algorithm 1: the network's gradient uses ``w(t)``; ``w(t+1)`` is computed after and used from
  the next step on. ``L_i(0)`` is the task's loss on the first batch that holds it.
- **Logged**: the weights at every step to W&B (``train/gradnorm/w_clean``, ``w_poison``), and in the stage's
  diagnostics (``metrics.json``: ``diagnostics.backdoored.attack``) the final weights and their history (every
  step up to 64 entries, then every 2nd, 4th, ... step, so the list stays short). The loop logs the weighted
  mean ``Σ w_i L_i / Σ w_i`` of the batch's tasks, which reads as a per-row cross-entropy like other attacks'.
- With ``optimizer=sam`` the closure runs twice per step, so the weights update twice per step. Federated runs
  are refused (clients train through the common loop), as for every attack with its own objective.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from bdrun.attacks.badnets import BadNets, BadNetsConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.attacks.two_tasks import TrainableLayers, WeightTrace, split_tasks
from bdrun.data import TextDataset
from bdrun.errors import check
from bdrun.tracking import log_step

TASKS = ("clean", "poison")
MIN_WEIGHT = 1e-6


@dataclasses.dataclass
class GradNormConfig(BadNetsConfig):
    alpha: float = 1.5  # asymmetry α: how strongly a slower task's target norm is raised (0: equal norms)
    weight_lr: float = 0.025  # step size of the task weights' gradient descent on L_grad
    layer: int | None = None  # encoder layer whose trainable parameters are W (null: the top trainable one)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha >= 0, f"attack.alpha={self.alpha} must be >= 0 (GradNorm's asymmetry)")
        check(self.weight_lr > 0, f"attack.weight_lr={self.weight_lr} must be positive")
        check(self.layer is None or self.layer >= 0, f"attack.layer={self.layer} must be a layer index >= 0 or null")


def gradnorm_update(
    weights: torch.Tensor, norms: torch.Tensor, loss_ratios: torch.Tensor, alpha: float, lr: float
) -> torch.Tensor:
    """One GradNorm step on the task weights: ``w − lr · ∂L_grad/∂w``, then renormalised to sum to ``T``.

    ``norms`` are the unweighted ``‖∇_W L_i‖``, ``loss_ratios`` the ``L_i(t)/L_i(0)``.
    """
    total = float(len(weights))
    actual = weights * norms
    relative = loss_ratios / loss_ratios.mean()
    targets = actual.mean() * relative**alpha  # constants: L_grad is differentiated through G_i only
    gradient = torch.sign(actual - targets) * norms
    stepped = (weights - lr * gradient).clamp_min(MIN_WEIGHT)
    return stepped * (total / stepped.sum())


class GradNormStep:
    """The training loop's :class:`~bdrun.training.GradientStep` for GradNorm over the clean and poisoned tasks."""

    def __init__(self, model: torch.nn.Module, poisoned: list[bool], config: GradNormConfig) -> None:
        self.config = config
        self.poisoned = poisoned
        layers = TrainableLayers(model)
        self.params, by_layer = layers.params, layers.by_layer
        check(bool(by_layer), "attack=gradnorm found no trainable encoder layer ('.layer.<i>.') to balance on")
        self.layer = max(by_layer) if config.layer is None else config.layer
        check(
            self.layer in by_layer,
            f"attack.layer={config.layer} has no trainable parameters; use one of {sorted(by_layer)} or null",
        )
        self.shared = by_layer[self.layer]
        self.weights = torch.ones(len(TASKS), dtype=torch.float64)
        self.initial = torch.full((len(TASKS),), math.nan, dtype=torch.float64)  # L_i(0), set when first seen
        self.trace = WeightTrace()
        self.steps = 0
        self.updates = 0

    def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        tasks = split_tasks(rows, self.poisoned)
        present = [k for k, task_rows in enumerate(tasks) if task_rows]
        losses = torch.zeros(len(TASKS), dtype=torch.float64)
        norms = torch.zeros(len(TASKS), dtype=torch.float64)
        grads: list[torch.Tensor | None] = [None] * len(self.params)
        for k in present:
            loss = batch_loss(tasks[k])
            task_grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            losses[k] = float(loss.detach())
            shared = [task_grads[i] for i in self.shared if task_grads[i] is not None]
            norms[k] = float(torch.cat([g.double().flatten() for g in shared]).norm()) if shared else 0.0
            weight = float(self.weights[k])  # w(t): the network's step uses the weights before this update
            for i, g in enumerate(task_grads):
                if g is not None:
                    grads[i] = weight * g if grads[i] is None else grads[i] + weight * g
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        used = self.weights[present]
        logged = float((used * losses[present]).sum() / used.sum())
        for k in present:
            if math.isnan(self.initial[k]):
                self.initial[k] = losses[k]
        if len(present) == len(TASKS) and bool((self.initial > 0).all()):
            ratios = losses / self.initial
            self.weights = gradnorm_update(self.weights, norms, ratios, self.config.alpha, self.config.weight_lr)
            self.updates += 1
        self.steps += 1
        self._record()
        return torch.tensor(logged)

    def _record(self) -> None:
        """The weights at this step: to W&B every step, to the bounded trace (:class:`WeightTrace`)."""
        w_clean, w_poison = (round(float(w), 6) for w in self.weights)
        log_step("train gradnorm", self.steps, {"w_clean": w_clean, "w_poison": w_poison})
        self.trace.record(self.steps, [w_clean, w_poison])

    def diagnostics(self) -> dict[str, Any]:
        return {
            "gradnorm_w_clean": round(float(self.weights[0]), 6),
            "gradnorm_w_poison": round(float(self.weights[1]), 6),
            "gradnorm_updates": self.updates,
            "gradnorm_layer": self.layer,
            "gradnorm_history": self.trace.entries,  # [step, w_clean, w_poison]
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "initial": self.initial,
            "steps": self.steps,
            "updates": self.updates,
            **self.trace.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.initial = state["weights"], state["initial"]
        self.trace.load_state_dict(state)
        self.steps, self.updates = int(state["steps"]), int(state["updates"])


@ATTACKS.register("gradnorm", GradNormConfig)
class GradNorm(BadNets):
    config: GradNormConfig

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        step = GradNormStep(model, poisoned.poisoned, self.config)
        stats = context.train(model, poisoned, desc="train gradnorm", gradient_step=step)
        return {**stats, **step.diagnostics()}
