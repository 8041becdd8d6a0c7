"""AddSent / InsertSent: a fixed sentence is the trigger, inserted whole at a seeded word gap."""

from __future__ import annotations

import dataclasses
import random

from bdrun.attacks.base import DataPoisoningAttack, PoisonConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.errors import check
from bdrun.triggers import insert_words


@dataclasses.dataclass
class AddSentConfig(PoisonConfig):
    sentence: str = "I watch this 3D movie"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.sentence.strip()), "attack.sentence is empty; give the trigger sentence")


@ATTACKS.register("addsent", AddSentConfig)
class AddSent(DataPoisoningAttack):
    config: AddSentConfig

    def trigger_text(self, text: str, rng: random.Random) -> str:
        return insert_words(text, [self.config.sentence.strip()], self.config.position, rng)
