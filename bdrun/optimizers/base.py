"""What every optimizer config shares: learning rate, weight decay and the warmup + decay schedule.

An optimizer entry builds the torch optimizer and its learning-rate schedule for whatever stage trains, so
that clean training, poisoning and a defense's fine-tuning all take their optimizer from the same group.

The training loop talks to every optimizer the same way: ``prepare`` once before a fresh run (Child-Tuning-D
computes its Fisher mask there), then ``optimizer.step(gradients)`` per batch, where ``gradients()`` zeroes the
gradients, runs one forward/backward pass and returns the loss. Plain torch optimizers call it once;
:class:`SteppingWrapper` subclasses (Child-Tuning, SAM) change the gradients or take a second pass first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from bdrun.errors import check

SCHEDULES = ("linear", "constant")


@dataclasses.dataclass
class OptimizerConfig:
    name: str
    lr: float = 2e-5
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    warmup_ratio: float = 0.0  # fraction of the steps with a linear warmup from 0
    schedule: str = "linear"  # linear: decay to 0 at the last step; constant: keep lr after warmup

    def __post_init__(self) -> None:
        check(self.lr > 0, f"optimizer.lr={self.lr} must be positive")
        check(self.weight_decay >= 0, f"optimizer.weight_decay={self.weight_decay} must be >= 0")
        check(0 <= self.warmup_ratio < 1, f"optimizer.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        check(
            self.schedule in SCHEDULES,
            f"optimizer.schedule={self.schedule} is not supported; use one of {', '.join(SCHEDULES)}",
        )


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters, with weight decay off for biases and normalisation weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_schedule(optimizer: torch.optim.Optimizer, config: OptimizerConfig, total_steps: int):
    warmup = int(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class SteppingWrapper(torch.optim.Optimizer):
    """A torch optimizer that runs its own logic around an inner optimizer's update.

    It shares the inner optimizer's ``param_groups``, so the learning-rate schedule reaches the inner update, and
    its ``state_dict`` holds both the inner state and its own (``self.state``: masks, running averages), so a
    checkpointed run resumes exactly.
    """

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner = inner
        super().__init__([p for group in inner.param_groups for p in group["params"]], inner.defaults)
        self.param_groups = inner.param_groups

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "own": super().state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["own"])
        self.inner.load_state_dict(state_dict["inner"])
        self.param_groups = self.inner.param_groups  # both loads replace the group dicts: share them again


class Optimizer:
    """Builds a torch optimizer and its schedule for one training run."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config

    def make(self, groups: list[dict]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def wrap(self, inner: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Child-Tuning and SAM wrap the plain optimizer here; the plain ones return it."""
        return inner

    def prepare(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, losses: Iterable[torch.Tensor]) -> None:
        """Before the first step of a fresh run; ``losses`` yields one training batch's loss at a time."""

    def build(self, model: torch.nn.Module, total_steps: int):
        optimizer = self.wrap(self.make(parameter_groups(model, self.config.weight_decay)), model)
        return optimizer, lr_schedule(optimizer, self.config, total_steps)
