"""The one trigger-insertion helper, used by poisoning and by the ASR evaluation alike."""

from __future__ import annotations

import random
from collections.abc import Sequence

POSITIONS = ("random", "start", "end")


def insert_words(text: str, pieces: Sequence[str], position: str, rng: random.Random) -> str:
    """Insert each piece (a word or a whole sentence) between the words of ``text``.

    ``random`` draws a gap (before the first word ... after the last) per piece from ``rng``.
    """
    words = text.split()
    for piece in pieces:
        if position == "start":
            at = 0
        elif position == "end":
            at = len(words)
        else:
            at = rng.randint(0, len(words))
        words.insert(at, piece)
    return " ".join(words)
