"""``optimizer=child_tuning_f`` / ``child_tuning_d``: Child-Tuning (Xu et al., EMNLP 2021), over AdamW.

Child-Tuning updates only a "child network" of the model by masking gradients before the AdamW update.

- **F** (task-free): every step, each eligible gradient entry is kept with probability ``p`` and scaled by
  ``1/p`` (a fresh Bernoulli mask per step, so the expected gradient is unchanged).
- **D** (task-driven): before training, the diagonal Fisher information ``F_i = mean over batches of g_i²`` is
  computed on the training data; the entries at or above its ``(1 - p)`` quantile (one ranking over all eligible
  entries) form a fixed mask, and gradients outside it are zeroed for the whole run.

Choices, checked against the official code (alibaba/AliceMind, ChildTuning) where it says so:
- Eligible parameters (``scope``): the official code masks, for D, only parameters whose name contains
  ``layer`` (the encoder layers; embeddings, pooler and classifier train normally) and, for F, every
  parameter. Those are the defaults here (``scope: encoder`` for D, ``all`` for F).
- The mask multiplies the gradient after clipping (clipping happens in the closure, as in the official HF
  Trainer loop) and before the AdamW moments, as in the official optimizer.
- Fisher: gradients of each training batch's loss with dropout on, squared and averaged over batches, as in
  the official ``calculate_fisher``.
- Weight decay: the official optimizer decays every entry, so D's non-child entries still shrink. Here the
  decoupled weight decay of a D run is applied only inside the mask, so that entries outside the child network
  stay bit-identical to their starting values, which is what "only the child network is updated" means (with
  zero gradients AdamW's update for those entries is exactly zero). F decays every entry, as the official code.
- The D mask is part of the optimizer state and is saved with checkpoints: a resumed run does not recompute
  the Fisher on weights that have already moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch

from bdrun.errors import check
from bdrun.optimizers.adamw import AdamW, AdamWConfig
from bdrun.optimizers.base import SteppingWrapper
from bdrun.optimizers.registry import OPTIMIZERS
from bdrun.progress import progress_bar

SCOPES = ("encoder", "all")


@dataclasses.dataclass
class ChildTuningConfig(AdamWConfig):
    p: float = 0.3  # D: fraction of eligible entries in the child network; F: keep probability per step
    scope: str = "all"  # encoder: only encoder-layer parameters are masked; all: every trainable parameter

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.p <= 1, f"optimizer.p={self.p} must be in (0, 1]")
        check(self.scope in SCOPES, f"optimizer.scope={self.scope} is not supported; use one of {', '.join(SCOPES)}")


def eligible(name: str, scope: str) -> bool:
    return scope == "all" or ".layer." in f".{name}"


class ChildTuningStep(SteppingWrapper):
    """Masks the eligible gradients, then lets the inner AdamW (built with no weight decay) update.

    ``mode`` is ``"F"`` (fresh Bernoulli mask per step) or ``"D"`` (``self.state[p]["mask"]``, set by
    :meth:`ChildTuningD.prepare`). Weight decay is applied here, decoupled as in AdamW, restricted to the mask for D.
    """

    def __init__(self, inner: torch.optim.Optimizer, masked: list[torch.nn.Parameter], mode: str, p: float) -> None:
        self.decay = [group.pop("decay") for group in inner.param_groups]
        super().__init__(inner)
        self.masked = masked
        self.masked_ids = {id(param) for param in masked}
        self.mode = mode
        self.p = p

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        with torch.enable_grad():
            loss = closure()
        for group, decay in zip(self.param_groups, self.decay, strict=True):
            for param in group["params"]:
                mask = None
                if id(param) in self.masked_ids:
                    mask = self.state[param]["mask"] if self.mode == "D" else self._bernoulli(param)
                if param.grad is not None and mask is not None:
                    param.grad.mul_(mask if self.mode == "D" else mask / self.p)
                if decay and param.grad is not None:
                    shrink = group["lr"] * decay
                    if self.mode == "D" and mask is not None:
                        param.sub_(param * mask, alpha=shrink)  # outside the child network: - 0, bit-identical
                    else:
                        param.mul_(1 - shrink)  # AdamW's own decoupled decay
        self.inner.step()
        return loss

    def _bernoulli(self, param: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.full_like(param, self.p))


class ChildTuning(AdamW):
    config: ChildTuningConfig
    mode = "F"

    def make(self, groups: list[dict]) -> torch.optim.Optimizer:
        for group in groups:  # decay is applied by ChildTuningStep, masked for D
            group["decay"], group["weight_decay"] = group["weight_decay"], 0.0
        return super().make(groups)

    def wrap(self, inner: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        masked = [p for n, p in model.named_parameters() if p.requires_grad and eligible(n, self.config.scope)]
        check(masked, f"optimizer.scope={self.config.scope} selects no parameters of this model; use scope=all")
        return ChildTuningStep(inner, masked, self.mode, self.config.p)


@dataclasses.dataclass
class ChildTuningFConfig(ChildTuningConfig):
    pass


@dataclasses.dataclass
class ChildTuningDConfig(ChildTuningConfig):
    scope: str = "encoder"


@OPTIMIZERS.register("child_tuning_f", ChildTuningFConfig)
class ChildTuningF(ChildTuning):
    mode = "F"


@OPTIMIZERS.register("child_tuning_d", ChildTuningDConfig)
class ChildTuningD(ChildTuning):
    mode = "D"

    def prepare(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, losses: Iterable[torch.Tensor]) -> None:
        """Fisher information over the training data, then the fixed top-``p`` mask."""
        assert isinstance(optimizer, ChildTuningStep)
        fisher = {id(p): torch.zeros_like(p) for p in optimizer.masked}
        batches = 0
        with progress_bar() as bar:
            task = bar.add_task("child-tuning fisher", total=None, info="")
            for loss in losses:
                model.zero_grad(set_to_none=True)
                loss.backward()
                for param in optimizer.masked:
                    if param.grad is not None:
                        fisher[id(param)] += param.grad.detach() ** 2
                batches += 1
                bar.update(task, advance=1)
        model.zero_grad(set_to_none=True)
        scores = torch.cat([f.flatten() for f in fisher.values()]) / max(batches, 1)
        keep = max(1, round(self.config.p * scores.numel()))
        threshold = torch.kthvalue(scores.cpu(), scores.numel() - keep + 1).values.item()
        for param in optimizer.masked:
            optimizer.state[param]["mask"] = (fisher[id(param)] / max(batches, 1) >= threshold).to(param.dtype)
