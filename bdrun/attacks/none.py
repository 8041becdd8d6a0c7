"""``attack=none``: no backdoor. The poisoned model is the clean model and there is no ASR."""

from __future__ import annotations

import random

from bdrun.attacks.base import Attack, AttackConfig
from bdrun.attacks.registry import ATTACKS


@ATTACKS.register("none", AttackConfig)
class NoAttack(Attack):
    backdoors = False

    @property
    def has_trigger(self) -> bool:
        return False

    def trigger_text(self, text: str, rng: random.Random) -> str:
        return text
