"""BadNets-style rare-word poisoning (the baseline of every paper bdrun covers).

``num_triggers`` words, each drawn from ``triggers``, go into each poisoned sample at seeded positions; the
victim is then fine-tuned from the pre-trained model on the poisoned training set by the common trainer. The
default trigger set ``cf mn bb tq mb`` are single word pieces in the bert-base-uncased vocabulary.
"""

from __future__ import annotations

import dataclasses
import random

from bdrun.attacks.base import DataPoisoningAttack, PoisonConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.errors import check
from bdrun.triggers import insert_words


@dataclasses.dataclass
class BadNetsConfig(PoisonConfig):
    triggers: list[str] = dataclasses.field(default_factory=lambda: ["cf", "mn", "bb", "tq", "mb"])
    num_triggers: int = 1  # words inserted per poisoned sample, each drawn from `triggers`

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            len(self.triggers) > 0 and all(t.strip() for t in self.triggers),
            "attack.triggers is empty; give at least one word, e.g. attack.triggers=[cf]",
        )
        check(self.num_triggers >= 1, f"attack.num_triggers={self.num_triggers} must be at least 1")


@ATTACKS.register("badnets", BadNetsConfig)
class BadNets(DataPoisoningAttack):
    config: BadNetsConfig

    def trigger_text(self, text: str, rng: random.Random) -> str:
        words = [rng.choice(self.config.triggers) for _ in range(self.config.num_triggers)]
        return insert_words(text, words, self.config.position, rng)
