"""Sentence pairs (QNLI, QQP, ...) carried as one string, so that every stage keeps handling plain texts.

A pair is stored as ``first + PAIR_SEP + second``. Poisoning, triggers, detectors and caches all pass texts
around as strings; only two places look inside: :func:`bdrun.batching.encode`, which hands the two halves to the
tokenizer as its pair input (``[CLS] first [SEP] second [SEP]`` with the second segment's token types), and
:meth:`bdrun.attacks.base.Attack.insert_trigger`, which puts the trigger into the sentence that
``attack.trigger_sentence`` names. Our choice: a separator word that no dataset here contains (U+241E, the
visible "record separator" symbol) surrounded by spaces, so that whitespace word-splitting (STRIP, trigger
insertion) sees it as one word of its own and never merges it with a neighbour; it is not whitespace to
``str.split``, unlike the ASCII control separators.
"""

from __future__ import annotations

PAIR_MARK = "\u241e"
PAIR_SEP = f" {PAIR_MARK} "


def join_pair(first: str, second: str) -> str:
    return f"{first.strip()}{PAIR_SEP}{second.strip()}"


def split_pair(text: str) -> tuple[str, str | None]:
    """``(first, second)`` of a pair, or ``(text, None)`` for a single sentence."""
    first, sep, second = text.partition(PAIR_SEP)
    return (first, second) if sep else (text, None)


def is_pair(text: str) -> bool:
    return PAIR_SEP in text
