"""``attack=gradient_control``: the gradient-control attack on parameter-efficient tuning (Gu et al., ACL 2023).

Setting: the backdoor lives in a PET module (``model.tuning=adapter|parallel_adapter|lora``) that the user later
fine-tunes on clean data, which makes a plainly injected backdoor fade. The paper treats injection as two tasks,
a clean batch ``x_c`` and a poisoned batch ``x_p`` (Algorithm 1), and controls, at every step, the per-layer
gradients ``g^(0) … g^(N-1), g^(o)`` of the N encoder layers and the output layer ``o``:

1. **CLNorm** (cross-layer gradient magnitude normalisation, section 4.2): each layer ``l`` has a scalar ``w_l``
   (start 1) scaling its poisoned gradient, updated toward a target magnitude ``z(l)`` on a line through 0 at the
   output layer and the layers' mean magnitude at an anchor layer ``l_a``:
   ``w_l ← w_l − α (w_l‖g_p^l‖ − z(l)) ‖g_p^l‖`` (α = 1e-4). The backdoor's updates move away from the output
   layer, which the user's retraining rewrites first, into the lower layers, which it changes least.
2. **ILProj** (intra-layer gradient direction projection): per layer each task's gradient is projected off the
   other (``ĝ_c = g_c − (g_c·g_p/‖g_p‖²) g_p`` and symmetrically) and the layer's update is
   ``(1−β_l)(ĝ_c + ĝ_p) + β_l (g_c + g_p)``, β = 1 for the lower half of the layers, 0 for the upper half.

Poisoning is BadNets' (same knobs, ``attack.source`` for the transfer threat model); the paper's values (50% of
the attacker's rows, ``label_mode=any``, triggers ``cf mn bb tq mb``, one per sentiment sample and ten per spam
sample) are the ``paper_gradient_control`` presets'. With both controls off (``clnorm=false ilproj=false``) the
attack runs the common trainer itself and reproduces ``attack=badnets`` bit for bit (the paper's "Vanilla").

What the paper leaves open, and what we chose:

- **The output layer ``o`` is the classification head** (appendix A.4: the hidden × labels linear module; every
  trainable ``classifier.*`` parameter). It has its own CLNorm weight with target ``z(o) = 0`` and is in ILProj's
  upper part (β = ``beta_upper`` = 0). Encoder layer ``i`` is every trainable parameter whose name contains
  ``.layer.<i>.`` (its adapters, parallel adapters or LoRA matrices; under full tuning the whole layer), flattened
  into one vector. Other trainable parameters (full tuning's embeddings and pooler) get the plain ``g_c + g_p``.
- **The two batches.** Each step of the common loop's seeded batch is split into its clean rows (``x_c``) and its
  poisoned rows (``x_p``), and ``G_c``, ``G_p`` are each the mean gradient over their own rows, as Algorithm 1's
  two batch-means (no weighting by a task's share of the batch). Splitting keeps the loop's data order, epochs,
  checkpoints and resume; each row is used once per epoch. At the paper's 50% each task gets about half of
  ``trainer.batch_size`` rows (binomial); ``trainer.batch_size=64`` gives each the paper's 32. A batch without
  poisoned rows trains the clean task alone and leaves the weights unchanged (and vice versa). With both controls
  neutral the update is ``g_c + g_p``, about twice the mixed batch's mean gradient at 50%: that is the sum
  Algorithm 1 takes.
- **CLNorm's line and norm.** ``‖g_p^l‖`` is the L2 norm of layer ``l``'s batch-mean poisoned gradient before
  weighting. Layers are indexed 0 (input side) … N−1, the head is ``o = N``. The mean ``m̄`` is over all N+1
  magnitudes at this step, and the anchor is the middle of the stack, ``l_a = N/2``, so
  ``z(l) = 2 m̄ (N − l)/N``: 0 at the head, ``2m̄`` at layer 0, averaging to ``m̄`` (the total is redistributed,
  not grown). The weights update first, then scale this step's ``g_p``; they are clamped at 0 (a negative weight
  would reverse the backdoor's gradient), and a step never passes its target (``α_l = min(α, 1/‖g_p^l‖²)``, which
  only binds for a scaled α). CLNorm runs before ILProj.
- **α and the step budget.** The paper takes about 19k attacker steps (60.6k rows, 10 epochs, batch 32) at
  α = 1e-4; at a few hundred steps the same α moves nothing. ``clnorm_alpha_scale=paper_steps`` multiplies α by
  ``clnorm_paper_steps`` / this run's optimizer steps, so the weights relax as far as over the paper's run
  (on in ``paper_gradient_control_cpu``); ``none`` keeps α as given (the full-size preset).
- **ILProj.** Unconditional by default (Algorithm 1); ``conflict_only=true`` projects only when ``g_c·g_p < 0``
  (PCGrad's rule). Both projections use the unprojected gradients; a zero gradient projects nothing. "Lower half"
  is encoder layers ``l < N/2`` (0–2 of 6).
- **Logged.** Every layer's weight at every step to W&B (``train/gradient_control/clnorm_w_<layer>``), and in
  the stage's diagnostics (``metrics.json``: ``diagnostics.backdoored.attack``) the final weights, the effective
  α and a history ``[step, w_0 … w_N]`` (every step up to 64 entries, then every 2nd, 4th, … step). All of it is
  checkpointed, so a resumed run continues the same trace. With ``optimizer=sam`` the closure runs twice per
  step, so the weights update twice per step.
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

ALPHA_SCALES = ("none", "paper_steps")
STAGE = "train gradient control"


@dataclasses.dataclass
class GradientControlConfig(BadNetsConfig):
    clnorm: bool = True  # cross-layer gradient magnitude normalisation of the poisoned gradient
    clnorm_alpha: float = 1e-4  # step size α of the per-layer weight update (paper)
    clnorm_alpha_scale: str = "none"  # paper_steps: α × clnorm_paper_steps / this run's steps
    clnorm_paper_steps: int = 18940  # the paper's attacker steps: 60.6k rows / batch 32 × 10 epochs
    ilproj: bool = True  # intra-layer projection of the clean and poisoned gradients off each other
    beta_lower: float = 1.0  # β of the lower half of the encoder layers (1: plain sum)
    beta_upper: float = 0.0  # β of the upper half and the head (0: fully projected)
    conflict_only: bool = False  # project only when the two gradients conflict (negative dot product)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.clnorm_alpha > 0, f"attack.clnorm_alpha={self.clnorm_alpha} must be positive")
        check(
            self.clnorm_alpha_scale in ALPHA_SCALES,
            f"attack.clnorm_alpha_scale={self.clnorm_alpha_scale} is not supported; use {' or '.join(ALPHA_SCALES)}",
        )
        check(self.clnorm_paper_steps >= 1, f"attack.clnorm_paper_steps={self.clnorm_paper_steps} must be >= 1")
        for knob in ("beta_lower", "beta_upper"):
            value = getattr(self, knob)
            check(0.0 <= value <= 1.0, f"attack.{knob}={value} must be in [0, 1]")

    def effective_alpha(self, steps: int) -> float:
        """α for a run of ``steps`` optimizer steps: scaled to the paper's budget under ``paper_steps``."""
        if self.clnorm_alpha_scale == "paper_steps":
            return self.clnorm_alpha * self.clnorm_paper_steps / max(steps, 1)
        return self.clnorm_alpha


def clnorm_targets(magnitudes: torch.Tensor) -> torch.Tensor:
    """``z(l) = 2 m̄ (N − l)/N`` for layers 0 … N, the last being the output layer: 0 there, ``m̄`` (the mean
    magnitude) at the anchor ``l_a = N/2``, linear in between and below."""
    count = len(magnitudes)
    mean = magnitudes.mean()
    if count == 1:
        return mean.reshape(1)
    depth_from_top = torch.arange(count - 1, -1, -1, dtype=magnitudes.dtype, device=magnitudes.device)
    return 2 * mean * depth_from_top / (count - 1)


def clnorm_update(weights: torch.Tensor, magnitudes: torch.Tensor, alpha: float) -> torch.Tensor:
    """One step of ``w ← w − α_l (w·m − z) m`` toward the targets, with ``α_l = min(α, 1/m²)`` (never past the
    target) and the result clamped at 0."""
    targets = clnorm_targets(magnitudes)
    steps = torch.where(magnitudes > 0, torch.clamp(1 / magnitudes.square(), max=alpha), alpha)
    return (weights - steps * (weights * magnitudes - targets) * magnitudes).clamp_min(0.0)


def project_off(vector: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``vector`` minus its component along ``direction`` (unchanged if ``direction`` is zero)."""
    norm2 = direction.dot(direction)
    if norm2 == 0:
        return vector
    return vector - (vector.dot(direction) / norm2) * direction


def ilproj(clean: torch.Tensor, poison: torch.Tensor, beta: float, conflict_only: bool = False) -> torch.Tensor:
    """``(1−β)(ĝ_c + ĝ_p) + β (g_c + g_p)`` for one layer's flattened gradients."""
    plain = clean + poison
    if beta == 1.0 or (conflict_only and clean.dot(poison) >= 0):
        return plain
    projected = project_off(clean, poison) + project_off(poison, clean)
    return (1 - beta) * projected + beta * plain


class GradientController:
    """The training loop's :class:`~bdrun.training.GradientStep` for gradient control (Algorithm 1)."""

    def __init__(
        self, model: torch.nn.Module, poisoned: list[bool], config: GradientControlConfig, total_steps: int
    ) -> None:
        self.config = config
        self.poisoned = poisoned
        layers = TrainableLayers(model)
        self.params, by_layer, head = layers.params, layers.by_layer, layers.head
        check(bool(by_layer), "attack=gradient_control found no trainable encoder layer ('.layer.<i>.') to control")
        count = len(by_layer)
        # The controlled layers, input side first; the head (output layer o) last.
        self.groups = [by_layer[i] for i in sorted(by_layer)] + ([head] if head else [])
        self.names = [f"layer{i}" for i in sorted(by_layer)] + (["head"] if head else [])
        grouped = {i for group in self.groups for i in group}
        self.others = [i for i in range(len(self.params)) if i not in grouped]
        lower = [config.beta_lower if k < count / 2 else config.beta_upper for k in range(count)]
        self.betas = lower + ([config.beta_upper] if head else [])
        self.alpha = config.effective_alpha(total_steps)
        self.weights = torch.ones(len(self.groups), dtype=torch.float64)
        self.cosine_sum = torch.zeros(len(self.groups), dtype=torch.float64)
        self.trace = WeightTrace()
        self.steps = 0

    def _task_gradients(
        self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]
    ) -> tuple[list[torch.Tensor], float]:
        """The task's batch-mean gradient over its own rows, and that batch's mean loss."""
        if not rows:
            return [torch.zeros_like(p) for p in self.params], 0.0
        loss = batch_loss(rows)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        gradients = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params, strict=True)]
        return gradients, float(loss.detach())

    def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        clean, dirty = split_tasks(rows, self.poisoned)
        g_clean, loss_clean = self._task_gradients(clean, batch_loss)
        g_poison, loss_poison = self._task_gradients(dirty, batch_loss)
        flat_c = [torch.cat([g_clean[i].flatten() for i in group]) for group in self.groups]
        flat_p = [torch.cat([g_poison[i].flatten() for i in group]) for group in self.groups]
        if self.config.clnorm and dirty:
            magnitudes = torch.stack([g.double().norm() for g in flat_p]).cpu()
            self.weights = clnorm_update(self.weights, magnitudes, self.alpha)
            flat_p = [g * float(w) for g, w in zip(flat_p, self.weights, strict=True)]
        for k, group in enumerate(self.groups):
            c, p = flat_c[k], flat_p[k]
            if c.norm() > 0 and p.norm() > 0:
                self.cosine_sum[k] += float(c.dot(p) / (c.norm() * p.norm()))
            combined = ilproj(c, p, self.betas[k], self.config.conflict_only) if self.config.ilproj else c + p
            offset = 0
            for i in group:
                size = self.params[i].numel()
                self.params[i].grad = combined[offset : offset + size].view_as(self.params[i]).clone()
                offset += size
        for i in self.others:
            self.params[i].grad = g_clean[i] + g_poison[i]
        self.steps += 1
        self._record()
        # Logged as the rows' mean cross-entropy, comparable with the other attacks' training loss.
        return torch.tensor((len(clean) * loss_clean + len(dirty) * loss_poison) / len(rows))

    def _record(self) -> None:
        """The weights at this step: to W&B every step, to the bounded trace (:class:`WeightTrace`)."""
        weights = [round(float(w), 6) for w in self.weights]
        log_step(STAGE, self.steps, {f"clnorm_w_{n}": w for n, w in zip(self.names, weights, strict=True)})
        self.trace.record(self.steps, weights)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "clnorm_layers": self.names,
            "clnorm_weights": [round(float(w), 6) for w in self.weights],
            "clnorm_alpha": self.alpha,
            "clnorm_history": self.trace.entries,  # [step, w_layer0 … w_head]
            "mean_cosine_clean_poison": [round(float(c) / max(self.steps, 1), 4) for c in self.cosine_sum],
            "betas": self.betas,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "cosine_sum": self.cosine_sum,
            "steps": self.steps,
            **self.trace.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.cosine_sum, self.steps = state["weights"], state["cosine_sum"], int(state["steps"])
        self.trace.load_state_dict(state)


@ATTACKS.register("gradient_control", GradientControlConfig)
class GradientControl(BadNets):
    config: GradientControlConfig

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        if not (self.config.clnorm or self.config.ilproj):  # both controls off: vanilla poisoned training
            return super().train(model, poisoned, context)
        steps = math.ceil(len(poisoned) / context.trainer.batch_size) * context.trainer.epochs
        controller = GradientController(model, poisoned.poisoned, self.config, steps)
        stats = context.train(model, poisoned, desc=STAGE, gradient_step=controller)
        return {**stats, **controller.diagnostics()}
