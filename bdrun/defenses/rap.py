"""``defense=rap``: RAP, robustness-aware perturbations (Yang et al., EMNLP 2021; code lancopku/RAP).

Backdoor training makes triggered inputs far more robust than clean ones: a triggered input stays in the
target class whatever else it contains. RAP exploits that gap with one rare word whose input embedding the
defender trains on clean data so that inserting it lowers the protect-class probability of clean inputs by a
chosen margin; a triggered input's probability barely moves. Score = −(drop of the protect-class probability
when the word is inserted), so that higher = more suspicious (a small drop).

Our reading of the paper and the official ``rap_defense.py`` / ``evaluate_rap_performance.py``:

- data: the clean samples of the protect label (the fitting part of the dev set here); the RAP word is
  inserted as the first word;
- loss, with Δ = p_protect(x + word) − p_protect(x) and the probability range [−drop_high, −drop_low]
  (the paper's −u_up, −u_low; defaults 0.3 and 0.1, as in the authors' script):
  ``scale_factor · mean(relu(Δ + drop_low)) + mean(relu(−drop_high − Δ))``, i.e. push the drop above
  drop_low (weighted by λ = scale_factor) without letting it exceed drop_high;
- only the word's embedding row changes, by a manual step ``row −= lr · grad[row]`` (lr 1e-2) and a rescale
  to its original norm after every step; like the authors (who follow EP here) we never zero the gradients,
  so they accumulate; batch 32, 5 epochs, the model in train mode (dropout on) as in their loop;
- only inputs that the model assigns to the protect label are screened (the shared detector protocol,
  :class:`~bdrun.defenses.base.Detector`); RAP needs that label for training, so it cannot be null here.

The word must be a single wordpiece and must not be the attack's trigger (default ``mb``: BadNets and EP here
use ``cf``, the authors' own RAP word).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bdrun.batching import collate, encode
from bdrun.context import StageContext
from bdrun.data import TextDataset
from bdrun.defenses.base import Detector, DetectorConfig
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check
from bdrun.training import epoch_order
from bdrun.triggers import insert_words


@dataclasses.dataclass
class RapConfig(DetectorConfig):
    word: str = "mb"  # the RAP word: one rare wordpiece, not the attack's trigger
    drop_low: float = 0.1  # clean inputs' protect-probability drop should be at least this ...
    drop_high: float = 0.3  # ... and at most this
    scale_factor: float = 1.0  # λ: weight of the "drop at least drop_low" term
    epochs: int = 5
    lr: float = 1e-2
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.word.split()) == 1, f"defense.word='{self.word}' must be one word")
        check(self.protect_label is not None, "defense=rap needs defense.protect_label (the class it protects)")
        check(
            0.0 <= self.drop_low <= self.drop_high <= 1.0,
            f"defense.drop_low={self.drop_low} / drop_high={self.drop_high} must satisfy 0 <= low <= high <= 1",
        )
        check(self.scale_factor > 0, f"defense.scale_factor={self.scale_factor} must be positive")
        check(self.epochs >= 1 and self.batch_size >= 1, "defense.epochs and defense.batch_size must be >= 1")
        check(self.lr > 0, f"defense.lr={self.lr} must be positive")


def rap_loss(drop: torch.Tensor, drop_low: float, drop_high: float, scale_factor: float) -> torch.Tensor:
    """Zero while every drop lies in [drop_low, drop_high]; linear outside (the paper's hinge form)."""
    return scale_factor * torch.relu(drop_low - drop).mean() + torch.relu(drop - drop_high).mean()


@DEFENSES.register("rap", RapConfig)
class Rap(Detector):
    config: RapConfig
    revision = 2  # 2: the threshold is fitted on the screened calibration inputs only (the shared protocol)

    def __init__(self, config: RapConfig) -> None:
        super().__init__(config)
        self.token_id = -1
        self.embedding: torch.Tensor | None = None  # the trained row of the RAP word

    def _protect_probability(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.softmax(output.logits.float(), dim=-1)[:, self.config.protect_label]

    def _with_word(self, texts: Sequence[str]) -> list[str]:
        return [insert_words(text, [self.config.word], "start", random.Random(0)) for text in texts]

    @contextlib.contextmanager
    def _rap_row(self, model: torch.nn.Module) -> Iterator[None]:
        """The model with the trained RAP row in place; the original row is restored afterwards."""
        weight = model.get_input_embeddings().weight
        original = weight.data[self.token_id].clone()
        weight.data[self.token_id] = self.embedding.to(weight.device, weight.dtype)
        try:
            yield
        finally:
            weight.data[self.token_id] = original

    def fit_scorer(
        self, model: torch.nn.Module, fitting: TextDataset, calibration: TextDataset, context: StageContext
    ) -> dict[str, Any]:
        cfg = self.config
        ids = context.tokenizer(cfg.word, add_special_tokens=False)["input_ids"]
        check(len(ids) == 1, f"defense.word='{cfg.word}' is {len(ids)} wordpieces; RAP needs one, e.g. mb or tq")
        self.token_id = int(ids[0])
        protected = [t for t, y in zip(fitting.texts, fitting.labels, strict=True) if y == cfg.protect_label]
        check(bool(protected), f"defense=rap: no dev sample has defense.protect_label={cfg.protect_label}")

        weight = model.get_input_embeddings().weight
        original = weight.data[self.token_id].clone()
        norm = original.norm()
        max_length = context.model_config.max_length
        plain, marked = (
            encode(context.tokenizer, protected, max_length),
            encode(context.tokenizer, self._with_word(protected), max_length),
        )
        trainable = [p.requires_grad for p in model.parameters()]
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        weight.requires_grad_(True)
        model.to(context.device).train()  # dropout on, as in the authors' loop
        torch.manual_seed(context.seed)
        losses = []
        try:
            for epoch in range(cfg.epochs):
                order = epoch_order(len(protected), context.seed, epoch)
                for start in range(0, len(order), cfg.batch_size):
                    rows = order[start : start + cfg.batch_size]
                    pad, device = context.tokenizer.pad_token_id, context.device
                    before = self._protect_probability(model(**collate([plain[i] for i in rows], pad, device)), {})
                    after = self._protect_probability(model(**collate([marked[i] for i in rows], pad, device)), {})
                    loss = rap_loss(before - after, cfg.drop_low, cfg.drop_high, cfg.scale_factor)
                    loss.backward()  # gradients accumulate on purpose (never zeroed), as in the official code
                    with torch.no_grad():
                        row = weight[self.token_id] - cfg.lr * weight.grad[self.token_id]
                        weight[self.token_id] = row * (norm / row.norm())
                    losses.append(float(loss.detach()))
            self.embedding = weight.data[self.token_id].detach().cpu().clone()
        finally:
            weight.data[self.token_id] = original  # the model stays as it was; score() swaps the row in
            weight.grad = None
            for parameter, flag in zip(model.parameters(), trainable, strict=True):
                parameter.requires_grad_(flag)
            model.eval()
        return {"rap_token_id": self.token_id, "protect_samples": len(protected), "final_loss": losses[-1]}

    def score(self, model: torch.nn.Module, texts: Sequence[str], context: StageContext) -> np.ndarray:
        assert self.embedding is not None, "fit or load the detector first"
        before = context.forward(model, texts, self._protect_probability, desc="rap plain").numpy()
        with self._rap_row(model):
            after = context.forward(model, self._with_word(texts), self._protect_probability, desc="rap word").numpy()
        return after - before  # minus the drop: a small drop (a robust input) is suspicious

    def state(self) -> dict[str, torch.Tensor]:
        assert self.embedding is not None, "fit the detector first"
        return {"embedding": self.embedding, "token_id": torch.tensor([self.token_id])}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.embedding = state["embedding"]
        self.token_id = int(state["token_id"].item())
