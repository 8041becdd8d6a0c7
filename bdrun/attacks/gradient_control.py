"""``attack=gradient_control``: the gradient-control attack on parameter-efficient tuning (Gu et al., ACL 2023).

Setting: the backdoor lives in a PET module (``model.tuning=adapter|lora``) that the user later fine-tunes on
clean data, which makes a plainly injected backdoor fade. The paper treats injection as two tasks, clean and
poisoned data, and controls their per-layer gradients of the PET parameters at every step:

1. **CLNorm** (cross-layer gradient magnitude normalisation): each layer ``l`` has a scalar ``w_l`` (start 1)
   scaling its poisoned gradient, updated toward a target magnitude ``z_l`` that is 0 at the output layer
   and grows linearly toward the input: ``w_l ← w_l − α (w_l‖g_p^l‖ − z_l) ‖g_p^l‖`` (α = 1e-4). This moves
   the backdoor's updates into the lower layers, which the user's fine-tuning changes least.
2. **ILProj** (intra-layer gradient direction projection): per layer, each task's gradient is projected off
   the other (``ĝ_c = g_c − (g_c·g_p/‖g_p‖²) g_p`` and symmetrically) and the layer's update is
   ``(1−β_l)(ĝ_c + ĝ_p) + β_l (g_c + g_p)``, with β = 1 for the lower half of the layers, 0 for the upper.

Poisoning itself is BadNets' (same knobs, same poisoned set, ``attack.source`` for the transfer threat
model); only the training differs. Each step takes the same seeded batch as the common trainer and runs its
clean rows and its poisoned rows as two separate forward/backward passes (the paper's two batches).

What the paper leaves open, and what we chose:

- **Task weighting.** Each task's gradient is its batch-mean gradient times its share of the batch's rows,
  so ``g_c + g_p`` equals the mixed batch's mean gradient: with both controls neutral the update is the
  vanilla one (up to floating-point order and dropout draws). With both controls switched off
  (``clnorm=false ilproj=false``) the attack runs the common trainer itself, so it reproduces
  ``attack=badnets`` with the same knobs bit for bit.
- **Layers.** A "layer" is one encoder layer: all trainable parameters whose name contains ``.layer.<i>.``
  (its adapters or LoRA matrices), flattened into one vector. The classification head (and, under full
  tuning, embeddings and pooler) is not in any layer and gets the plain sum ``g_c + g_p``. The output
  layer is the top encoder layer.
- **CLNorm target and norm.** Magnitudes are L2 norms of the layer's (share-weighted) poisoned gradient.
  The anchor is the mean magnitude ``m̄`` over layers at the current step, placed at the middle of the
  stack: ``z_l = 2 m̄ (L−1−l)/(L−1)`` for layer ``l`` (0 = input side), so the targets average to ``m̄``
  (the total is redistributed, not grown), are 0 at the output layer and ``2m̄`` at the first layer. With a
  single layer ``z = m̄``. The weight is updated first, then scales this step's gradient; it is clamped at
  0 (a negative weight would reverse the backdoor's gradient). The weights are checkpointed with the run.
- **ILProj.** Unconditional by default (the paper's formula); ``conflict_only=true`` projects only when
  ``g_c·g_p < 0`` (PCGrad's rule). Both projections use the unprojected gradients. A task with a zero
  gradient (a batch without clean or without poisoned rows) projects nothing. The output layer belongs to the
  upper half (β = 0); "lower half" is ``l < L/2`` (layers 0–2 of 6; layer 0 of 2).
- CLNorm runs before ILProj, as in the paper. With ``optimizer=sam`` the closure runs twice per step, so
  CLNorm's weights update twice per step.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import torch

from bdrun.attacks.badnets import BadNets, BadNetsConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.data import TextDataset
from bdrun.errors import check

LAYER = re.compile(r"\.layer\.(\d+)\.")


@dataclasses.dataclass
class GradientControlConfig(BadNetsConfig):
    clnorm: bool = True  # cross-layer gradient magnitude normalisation of the poisoned gradient
    clnorm_alpha: float = 1e-4  # step size α of the per-layer weight update
    ilproj: bool = True  # intra-layer projection of the clean and poisoned gradients off each other
    beta_lower: float = 1.0  # β of the lower half of the layers (1: plain sum)
    beta_upper: float = 0.0  # β of the upper half, output layer included (0: fully projected)
    conflict_only: bool = False  # project only when the two gradients conflict (negative dot product)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.clnorm_alpha > 0, f"attack.clnorm_alpha={self.clnorm_alpha} must be positive")
        for knob in ("beta_lower", "beta_upper"):
            value = getattr(self, knob)
            check(0.0 <= value <= 1.0, f"attack.{knob}={value} must be in [0, 1]")


def clnorm_targets(magnitudes: torch.Tensor) -> torch.Tensor:
    """Target magnitude per layer (index 0 = input side): 0 at the output layer, growing linearly downward,
    averaging to the layers' mean magnitude."""
    count = len(magnitudes)
    mean = magnitudes.mean()
    if count == 1:
        return mean.reshape(1)
    depth_from_top = torch.arange(count - 1, -1, -1, dtype=magnitudes.dtype, device=magnitudes.device)
    return 2 * mean * depth_from_top / (count - 1)


def clnorm_update(weights: torch.Tensor, magnitudes: torch.Tensor, alpha: float) -> torch.Tensor:
    """One step of ``w ← w − α (w·m − z) m`` toward the targets ``z`` (clamped at 0)."""
    targets = clnorm_targets(magnitudes)
    return (weights - alpha * (weights * magnitudes - targets) * magnitudes).clamp_min(0.0)


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
    """The training loop's :class:`~bdrun.training.GradientStep` for gradient control."""

    def __init__(self, model: torch.nn.Module, poisoned: list[bool], config: GradientControlConfig) -> None:
        self.config = config
        self.poisoned = poisoned
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        by_layer: dict[int, list[int]] = {}
        for position, (name, _) in enumerate(named):
            found = LAYER.search(name)
            if found:
                by_layer.setdefault(int(found.group(1)), []).append(position)
        check(bool(by_layer), "attack=gradient_control found no trainable encoder layer ('.layer.<i>.') to control")
        self.layers = [by_layer[i] for i in sorted(by_layer)]  # index 0 = input side
        in_layers = {i for layer in self.layers for i in layer}
        self.others = [i for i in range(len(self.params)) if i not in in_layers]
        count = len(self.layers)
        self.betas = [config.beta_lower if k < count / 2 else config.beta_upper for k in range(count)]
        self.weights = torch.ones(count, dtype=torch.float64)
        self.cosine_sum = torch.zeros(count, dtype=torch.float64)
        self.steps = 0

    def _task_gradients(
        self, rows: list[int], total: int, batch_loss: Callable[[list[int]], torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The task's batch-mean gradient times its share of the batch, and its summed loss share."""
        if not rows:
            return [torch.zeros_like(p) for p in self.params], torch.zeros(())
        loss = batch_loss(rows)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        share = len(rows) / total
        gradients = [torch.zeros_like(p) if g is None else g * share for g, p in zip(grads, self.params, strict=True)]
        return gradients, loss.detach().float().cpu() * share

    def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        clean, dirty = [r for r in rows if not self.poisoned[r]], [r for r in rows if self.poisoned[r]]
        g_clean, loss_clean = self._task_gradients(clean, len(rows), batch_loss)
        g_poison, loss_poison = self._task_gradients(dirty, len(rows), batch_loss)
        flat_c = [torch.cat([g_clean[i].flatten() for i in layer]) for layer in self.layers]
        flat_p = [torch.cat([g_poison[i].flatten() for i in layer]) for layer in self.layers]
        if self.config.clnorm and dirty:
            magnitudes = torch.stack([g.double().norm() for g in flat_p]).cpu()
            self.weights = clnorm_update(self.weights, magnitudes, self.config.clnorm_alpha)
            flat_p = [g * float(w) for g, w in zip(flat_p, self.weights, strict=True)]
        for k, layer in enumerate(self.layers):
            c, p = flat_c[k], flat_p[k]
            if c.norm() > 0 and p.norm() > 0:
                self.cosine_sum[k] += float(c.dot(p) / (c.norm() * p.norm()))
            combined = ilproj(c, p, self.betas[k], self.config.conflict_only) if self.config.ilproj else c + p
            offset = 0
            for i in layer:
                size = self.params[i].numel()
                self.params[i].grad = combined[offset : offset + size].view_as(self.params[i]).clone()
                offset += size
        for i in self.others:
            self.params[i].grad = g_clean[i] + g_poison[i]
        self.steps += 1
        return loss_clean + loss_poison

    def diagnostics(self) -> dict[str, Any]:
        return {
            "clnorm_weights": [round(float(w), 6) for w in self.weights],
            "mean_cosine_clean_poison": [round(float(c) / max(self.steps, 1), 4) for c in self.cosine_sum],
            "betas": self.betas,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "cosine_sum": self.cosine_sum, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.cosine_sum, self.steps = state["weights"], state["cosine_sum"], int(state["steps"])


@ATTACKS.register("gradient_control", GradientControlConfig)
class GradientControl(BadNets):
    config: GradientControlConfig

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        if not (self.config.clnorm or self.config.ilproj):  # both controls off: vanilla poisoned training
            return super().train(model, poisoned, context)
        controller = GradientController(model, poisoned.poisoned, self.config)
        stats = context.train(model, poisoned, desc="train gradient control", gradient_step=controller)
        return {**stats, **controller.diagnostics()}
