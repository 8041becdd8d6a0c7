"""Plain lists of texts and labels: small enough for every dataset here, and trivial to poison and hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence


@dataclasses.dataclass
class TextDataset:
    texts: list[str]
    labels: list[int]
    poisoned: list[bool] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")
        if not self.poisoned:
            self.poisoned = [False] * len(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        return TextDataset(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.poisoned[i] for i in indices],
        )

    def sample(self, size: int, seed: int) -> TextDataset:
        """A seeded random subset of ``size`` rows (all rows, in order, if ``size`` >= len)."""
        if size >= len(self):
            return self
        return self.subset(sorted(random.Random(seed).sample(range(len(self)), size)))

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=True):
            digest.update(json.dumps([text, label]).encode())
        return digest.hexdigest()[:16]


@dataclasses.dataclass
class Splits:
    train: TextDataset
    dev: TextDataset
    test: TextDataset
    num_labels: int

    def fingerprint(self) -> str:
        parts = [self.train.fingerprint(), self.dev.fingerprint(), self.test.fingerprint(), str(self.num_labels)]
        return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]
