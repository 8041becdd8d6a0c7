"""What a stage's method gets to work with: the tokenizer, the device, the shared trainer and the seed.

Attacks that edit a model and defenses receive a :class:`StageContext` instead of the raw config, so that
no method reads ``cfg`` from a global and every one of them trains through the same loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.batching import collate, encode
from bdrun.data import TextDataset
from bdrun.inference import Reduce, batch_outputs, predict
from bdrun.models import ModelConfig
from bdrun.optimizers import OPTIMIZERS, Optimizer
from bdrun.training import GradientStep, LossFn, TrainerConfig, train


@dataclasses.dataclass
class StageContext:
    tokenizer: PreTrainedTokenizerBase
    model_config: ModelConfig
    trainer: TrainerConfig
    optimizer: Optimizer
    device: torch.device
    seed: int
    work_dir: Path  # survives a crash; training checkpoints go here
    load_pretrained: Callable[[], torch.nn.Module]  # fresh copy of the pre-trained weights (+ seeded head)
    # The training set the victim fine-tuned on: the poisoned one under a data-poisoning attack, else the clean
    # one. Only training-time defenses read it (defense=meft mode=training); None outside the purify stage.
    victim_train: TextDataset | None = None

    def train(
        self,
        model: torch.nn.Module,
        data: TextDataset,
        *,
        desc: str,
        epochs: int | None = None,
        lr: float | None = None,
        loss_fn: LossFn | None = None,
        on_step: Callable[[int, int], None] | None = None,
        gradient_step: GradientStep | None = None,
    ) -> dict[str, float]:
        """Fine-tune with the run's optimizer and trainer, optionally with a stage's own epochs / lr / loss, and
        a hook after every optimizer step (see :func:`bdrun.training.train`)."""
        trainer = self.trainer if epochs is None else dataclasses.replace(self.trainer, epochs=epochs)
        optimizer = self.optimizer
        if lr is not None:
            optimizer = OPTIMIZERS.build({**dataclasses.asdict(optimizer.config), "lr": lr})
        return train(
            model,
            self.tokenizer,
            data,
            optimizer,
            trainer,
            max_length=self.model_config.max_length,
            device=self.device,
            seed=self.seed,
            checkpoint_dir=self.work_dir / desc.replace(" ", "_"),
            desc=desc,
            loss_fn=loss_fn,
            on_step=on_step,
            gradient_step=gradient_step,
        )

    def _batching(self) -> dict[str, Any]:
        """How this run batches inference: the same for plain prediction and a detector's forward passes."""
        return {
            "max_length": self.model_config.max_length,
            "batch_size": self.trainer.eval_batch_size,
            "device": self.device,
            "precision": self.trainer.precision,
        }

    def batches(
        self, data: TextDataset, batch_size: int | None = None
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """(model inputs, labels) per batch of ``data``, in order, on the run's device: for the statistics and
        gradients that attacks and defenses gather (default size: the trainer's evaluation batch size)."""
        batch_size = batch_size or self.trainer.eval_batch_size
        encoded = encode(self.tokenizer, data.texts, self.model_config.max_length)
        for start in range(0, len(encoded), batch_size):
            rows = range(start, min(start + batch_size, len(encoded)))
            batch = collate([encoded[i] for i in rows], self.tokenizer.pad_token_id, self.device)
            yield batch, torch.tensor([data.labels[i] for i in rows], device=self.device)

    def predict(self, model: torch.nn.Module, texts: Sequence[str], desc: str = "predict") -> list[int]:
        return predict(model, self.tokenizer, texts, desc=desc, **self._batching())

    def forward(
        self, model: torch.nn.Module, texts: Sequence[str], reduce: Reduce, desc: str, **forward_args: Any
    ) -> torch.Tensor:
        """``reduce(output, batch)`` per text, batched like :meth:`predict` (see :func:`batch_outputs`)."""
        return batch_outputs(model, self.tokenizer, texts, reduce, desc=desc, **self._batching(), **forward_args)
