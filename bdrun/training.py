"""The training loop, written once and shared by every stage that trains (clean, poisoning, defenses).

Read it top to bottom: tokenise, build optimizer and schedule, let the optimizer prepare (Child-Tuning-D's
Fisher pass), then for each epoch a seeded shuffle (optionally length-bucketed) and one optimizer step per
batch. The step gets a closure that computes the batch's gradients, so an optimizer that needs two passes
(SAM) calls it twice and the loop never knows which optimizer it runs. Every ``checkpoint_every`` steps (and
at the end of each epoch) the model, the optimizer, the schedule and the RNG state are written to
``checkpoint_dir``; a later call with the same arguments resumes from the newest complete checkpoint and
produces the same weights as an uninterrupted run, because the data order is a function of (seed, epoch)
and the dropout RNG state is restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.batching import collate, encode, length_bucketed_batches, to_device
from bdrun.data import TextDataset
from bdrun.errors import check
from bdrun.models import load_weights, save_weights
from bdrun.optimizers import Optimizer
from bdrun.progress import progress_bar
from bdrun.tracking import log_step

PRECISIONS = ("fp32", "bf16")

# A stage's own objective: (logits, labels) -> scalar loss. None: the model's cross-entropy.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GradientStep(Protocol):
    """A stage's own gradient computation for one batch (gradient_control: clean and poisoned rows separately).

    Called as ``step(rows, batch_loss)`` with the batch's row indices and the loop's ``batch_loss(rows)``; it
    leaves the gradients in ``.grad`` and returns the loss to log. Its state is checkpointed with the run.
    """

    def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclasses.dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    max_grad_norm: float | None = 1.0  # null turns gradient clipping off
    precision: str = "fp32"  # bf16: bfloat16 autocast (meant for CUDA)
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints
    bucketing: bool = True  # batches of similar-length inputs (see batching.length_bucketed_batches)
    bucket_batches: int = 8  # batches per length bucket, when bucketing (conf/trainer/default.yaml says why)
    compile: bool = False  # torch.compile the model for training (worth it on CUDA for long runs only)
    tf32: bool = True  # TF32 matmuls on CUDA (Ampere and newer); no effect on the CPU

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"trainer.epochs={self.epochs} must be at least 1")
        check(self.batch_size >= 1, f"trainer.batch_size={self.batch_size} must be at least 1")
        check(self.eval_batch_size >= 1, f"trainer.eval_batch_size={self.eval_batch_size} must be at least 1")
        check(
            self.precision in PRECISIONS,
            f"trainer.precision={self.precision} is not supported; use one of {', '.join(PRECISIONS)}",
        )
        check(self.checkpoint_every >= 1, f"trainer.checkpoint_every={self.checkpoint_every} must be >= 1")
        check(self.bucket_batches >= 1, f"trainer.bucket_batches={self.bucket_batches} must be >= 1")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(size, generator=_epoch_generator(seed, epoch)).tolist()


def epoch_batches(lengths: list[int], config: TrainerConfig, seed: int, epoch: int) -> list[list[int]]:
    """The batches (row indices) of one epoch: a function of (seed, epoch) only, which is what lets a resumed
    run skip straight to its batch. Without bucketing: consecutive slices of the seeded shuffle."""
    if config.bucketing:
        generator = _epoch_generator(seed, epoch)
        return length_bucketed_batches(lengths, config.batch_size, generator, config.bucket_batches)
    order = epoch_order(len(lengths), seed, epoch)
    return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def use_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 tensor-core matmuls on CUDA (Ampere and newer; ~1e-3 relative error, the usual trade for
    fine-tuning). A process-wide switch, so it is set from the run's config each time; the CPU ignores it."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def forward_module(model: torch.nn.Module, config: TrainerConfig) -> torch.nn.Module:
    """What the training step calls: the model itself, or with ``trainer.compile`` a ``torch.compile`` wrapper
    that shares its parameters (so the optimizer, checkpoints and saved weights see the plain model).
    ``dynamic=True`` because dynamic padding gives every batch its own width."""
    if not config.compile:
        return model
    return torch.compile(model, dynamic=True)


def _save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, gradient_step=None) -> None:
    """Write ``step-N`` atomically (temporary folder, then rename) and drop older checkpoints."""
    final = folder / f"step-{step:08d}"
    partial = folder / f".step-{step:08d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_weights(model, partial / "model.safetensors")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if gradient_step is not None:
        state["gradient_step"] = gradient_step.state_dict()
    torch.save(state, partial / "state.pt")
    partial.rename(final)
    for old in folder.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model, optimizer, scheduler, gradient_step=None) -> int:
    """Restore the newest complete checkpoint; returns the step to continue from (0 if none)."""
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    if not found:
        return 0
    latest = found[-1]
    load_weights(model, latest / "model.safetensors")
    # Our own file, read with the restricted (tensors and plain containers only) unpickler.
    state = torch.load(latest / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if gradient_step is not None:
        gradient_step.load_state_dict(state["gradient_step"])
    return int(state["step"])


def train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    data: TextDataset,
    optimizer_spec: Optimizer,
    config: TrainerConfig,
    *,
    max_length: int,
    device: torch.device,
    seed: int,
    checkpoint_dir: Path | None = None,
    desc: str = "train",
    loss_fn: LossFn | None = None,
    on_step: Callable[[int, int], None] | None = None,
    gradient_step: GradientStep | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` on ``data`` in place and return training statistics.

    ``loss_fn`` replaces the model's cross-entropy for stages with another objective (MEFT's entropy phase);
    ``gradient_step`` replaces the plain ``batch_loss(rows).backward()`` (gradient_control).
    ``on_step(step, total_steps)`` runs after every optimizer step, and once with the resumed step after a
    checkpoint is restored (surgery's in-training pruning).
    """
    encoded = encode(tokenizer, data.texts, max_length)
    labels = torch.tensor(data.labels, dtype=torch.long)
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    model.to(device)
    use_tf32(device, config.tf32)
    step_model = forward_module(model, config)
    optimizer, scheduler = optimizer_spec.build(model, total_steps)
    torch.manual_seed(seed)
    step = _load_checkpoint(checkpoint_dir, model, optimizer, scheduler, gradient_step) if checkpoint_dir else 0
    resumed_from = step
    if on_step is not None and step > 0:
        on_step(step, total_steps)
    model.train()

    def batch_loss(rows: list[int]) -> torch.Tensor:
        batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id, device)
        targets = to_device(labels[rows], device)
        with autocast(device, config.precision):
            if loss_fn is None:
                return step_model(**batch, labels=targets).loss
            return loss_fn(step_model(**batch).logits.float(), targets)

    def batches(order: list[int]) -> list[list[int]]:
        return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    if step == 0:  # a fresh run (a resumed one restores what this computed from its checkpoint)
        optimizer_spec.prepare(optimizer, model, (batch_loss(rows) for rows in batches(list(range(len(data))))))

    losses: list[float] = []
    seen, started = 0, time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(desc, total=total_steps, completed=step, info="")
        for epoch in range(step // steps_per_epoch, config.epochs):
            planned = epoch_batches(lengths, config, seed, epoch)
            for batch_no in range(step % steps_per_epoch, steps_per_epoch):
                rows = planned[batch_no]

                def gradients(rows: list[int] = rows) -> torch.Tensor:
                    """Zero the gradients, then one forward/backward pass; optimizers may call it twice (SAM)."""
                    optimizer.zero_grad(set_to_none=True)
                    if gradient_step is None:
                        loss = batch_loss(rows)
                        loss.backward()
                    else:
                        loss = gradient_step(rows, batch_loss)
                    if config.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    return loss

                loss = optimizer.step(gradients)
                scheduler.step()

                step += 1
                if on_step is not None:
                    on_step(step, total_steps)
                seen += len(rows)
                losses.append(loss.item())
                log_step(desc, step, {"loss": losses[-1], "lr": scheduler.get_last_lr()[0]})
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.3f}")
                # The last step needs no checkpoint: the stage saves the finished model itself.
                boundary = step % config.checkpoint_every == 0 or batch_no == steps_per_epoch - 1
                if checkpoint_dir and boundary and step < total_steps:
                    _save_checkpoint(checkpoint_dir, step, model, optimizer, scheduler, gradient_step)
    optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - started
    model.eval()
    tail = losses[-steps_per_epoch:] or [float("nan")]
    return {
        "steps": float(total_steps),
        "final_loss": sum(tail) / len(tail),
        "samples_per_second": seen / elapsed if elapsed > 0 else 0.0,
        # The checkpoint this call continued from (0: none): a rerun's stage metadata says where it picked up.
        "resumed_from_step": float(resumed_from),
    }
