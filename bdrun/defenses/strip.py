"""``defense=strip``: STRIP, the entropy of predictions over perturbed copies of an input (Gao et al.).

A trigger dominates the prediction: however much of a triggered input is replaced, the backdoored model keeps
predicting the target with confidence, so the predictions over perturbed copies have low entropy; a clean
input's prediction wanders as its words are replaced. Score = −(mean entropy over the copies), so that higher
means more suspicious like every detector here.

Our reading (the text version as the RAP authors ran it as a baseline, lancopku/RAP ``strip_vita.py``):
each of ``copies`` copies replaces ``max(1, int(replace_ratio × words))`` randomly chosen word positions with
words from the clean dev texts (the fitting part). The baseline there picks replacement words by the TF-IDF
ranking of a random held-out sample; we draw them uniformly from the fitting texts' words (punctuation
excluded), which keeps the perturbation clean-domain and simple. Defaults follow that baseline: 20 copies,
replace_ratio 0.7. The perturbations of each input are seeded by (seed, input), so a score does not depend on
which other inputs are scored with it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bdrun.context import StageContext
from bdrun.data import TextDataset
from bdrun.defenses.base import Detector, DetectorConfig
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

PUNCTUATION = frozenset(".,!?:;\"'()/~-`") | {"...", "--", "``", "''", "'s", "n't"}


@dataclasses.dataclass
class StripConfig(DetectorConfig):
    copies: int = 20  # perturbed copies per input
    replace_ratio: float = 0.7  # fraction of an input's words replaced in each copy (at least one)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.copies >= 1, f"defense.copies={self.copies} must be at least 1, e.g. 20")
        check(0.0 < self.replace_ratio <= 1.0, f"defense.replace_ratio={self.replace_ratio} must be in (0, 1]")


def perturb(text: str, words: Sequence[str], replace_ratio: float, rng: random.Random) -> str:
    """One copy of ``text`` with a fraction of its word positions replaced by random ``words``."""
    tokens = text.split()
    if not tokens:
        return text
    for position in rng.sample(range(len(tokens)), max(1, int(len(tokens) * replace_ratio))):
        tokens[position] = rng.choice(words)
    return " ".join(tokens)


def entropy(output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Entropy of each row's predicted class distribution (nats)."""
    log_probs = torch.log_softmax(output.logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


@DEFENSES.register("strip", StripConfig)
class Strip(Detector):
    config: StripConfig

    def __init__(self, config: StripConfig) -> None:
        super().__init__(config)
        self.words: list[str] = []

    def fit_scorer(
        self, model: torch.nn.Module, fitting: TextDataset, calibration: TextDataset, context: StageContext
    ) -> dict[str, Any]:
        self.words = sorted({w for text in fitting.texts for w in text.split() if w not in PUNCTUATION})
        check(bool(self.words), "defense=strip found no words in the clean dev texts to perturb with")
        return {"replacement_words": len(self.words)}

    def score(self, model: torch.nn.Module, texts: Sequence[str], context: StageContext) -> np.ndarray:
        copies = []
        for text in texts:
            rng = random.Random(f"{context.seed}:{text}")
            copies.extend(perturb(text, self.words, self.config.replace_ratio, rng) for _ in range(self.config.copies))
        entropies = context.forward(model, copies, entropy, desc="strip copies").numpy()
        return -entropies.reshape(len(texts), self.config.copies).mean(axis=1)

    def state(self) -> dict[str, torch.Tensor]:
        # The word pool as UTF-8 bytes, newline-separated: tensors only, so it fits the safetensors file.
        return {"words": torch.frombuffer(bytearray("\n".join(self.words).encode()), dtype=torch.uint8)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.words = bytes(state["words"].numpy()).decode().split("\n")
