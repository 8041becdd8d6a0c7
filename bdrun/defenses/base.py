"""The shared interface of defenses.

A purifier gets the suspect model, the stage context (with the pre-trained weights on demand) and the
defender's small clean set, changes the model in place and returns its diagnostics. Online detectors
(which flag inputs instead of changing weights) will share the registry with their own interface.

:meth:`Purifier.purify` is written once here: it draws the clean set, applies E-PUR first when
``defense.e_pur=true`` (any purifier can be combined with it, as the Fine-mixing paper combines it with
several defenses), then hands over to the defense's own :meth:`Purifier.apply`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from bdrun.batching import collate, encode
from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.errors import check


@dataclasses.dataclass
class DefenseConfig:
    name: str


@dataclasses.dataclass
class CleanDataConfig(DefenseConfig):
    """Knobs of a defense that owns a small clean set drawn from the (clean) training split."""

    # <= 1: fraction of the training set; > 1: number of samples.
    clean_size: float = 0.05
    epochs: int = 3  # fine-tuning epochs on the clean set
    lr: float | None = None  # null: the optimizer group's lr
    e_pur: bool = False  # first reset the most suspicious word embeddings (E-PUR, bdrun/defenses/e_pur.py)
    e_pur_top_n: int = 100  # how many vocabulary rows E-PUR resets

    def __post_init__(self) -> None:
        check(self.clean_size > 0, f"defense.clean_size={self.clean_size} must be a positive fraction or count")
        check(self.epochs >= 1, f"defense.epochs={self.epochs} must be at least 1")
        check(self.lr is None or self.lr > 0, f"defense.lr={self.lr} must be positive (or null)")
        check(self.e_pur_top_n >= 1, f"defense.e_pur_top_n={self.e_pur_top_n} must be at least 1")


def clean_subset(splits: Splits, clean_size: float, seed: int) -> TextDataset:
    """The defender's clean data: a seeded sample of the clean training split."""
    size = round(clean_size * len(splits.train)) if clean_size <= 1 else int(clean_size)
    check(size >= 1, f"defense.clean_size={clean_size} selects no samples; raise it")
    return splits.train.sample(size, seed)


class Defense:
    kind = "none"

    def __init__(self, config: DefenseConfig) -> None:
        self.config = config


def clean_batches(
    data: TextDataset, context: StageContext, batch_size: int | None = None
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """(model inputs, labels) per batch, in order, for the statistics that defenses gather on clean data."""
    batch_size = batch_size or context.trainer.eval_batch_size
    encoded = encode(context.tokenizer, data.texts, context.model_config.max_length)
    for start in range(0, len(encoded), batch_size):
        rows = range(start, min(start + batch_size, len(encoded)))
        batch = collate([encoded[i] for i in rows], context.tokenizer.pad_token_id, context.device)
        yield batch, torch.tensor([data.labels[i] for i in rows], device=context.device)


class Purifier(Defense):
    """Purifies the suspect weights in place; every purifier owns a small clean set (:class:`CleanDataConfig`)."""

    kind = "purifier"
    config: CleanDataConfig

    def purify(self, model: torch.nn.Module, splits: Splits, context: StageContext) -> dict[str, Any]:
        # Imported here: e_pur.py defines a Purifier itself, so a top-level import would be circular.
        from bdrun.defenses.e_pur import embedding_purification

        clean = clean_subset(splits, self.config.clean_size, context.seed)
        diagnostics: dict[str, Any] = {"clean_samples": len(clean)}
        if self.config.e_pur:
            pretrained = context.load_pretrained()
            diagnostics["e_pur"] = embedding_purification(
                model, pretrained, clean, context.tokenizer, self.config.e_pur_top_n
            )
        diagnostics.update(self.apply(model, clean, splits, context))
        return diagnostics

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        """The defense itself, on the defender's clean set; returns its own diagnostics."""
        raise NotImplementedError

    def fine_tune(self, model: torch.nn.Module, clean: TextDataset, context: StageContext, desc: str) -> dict:
        """Fine-tune on the clean set with the defense's epochs and lr (``desc`` names the checkpoint folder)."""
        return context.train(model, clean, desc=desc, epochs=self.config.epochs, lr=self.config.lr)
