"""A 4-class task built from the shared data, for tests that need more than two labels.

Class 0: SST-2 negative, 1: SST-2 positive, 2: Stormfront hate, 3: Ling-Spam spam. Every text is cut to its
first 16 words, so that the tests' 32-token models never truncate a trigger away (an ASR ceiling below 100%).
Rows are drawn with a fixed seed, written as TSV files, and read back through the ordinary loader, so a test
exercises the same path a user's own 4-class dataset takes.
"""

from __future__ import annotations

import random
from pathlib import Path

from bdrun.data import DatasetConfig, load_splits

NAMES = ("negative", "positive", "hate", "spam")


def _pools(shared_data: Path) -> list[list[str]]:
    sst2 = load_splits(DatasetConfig(name="sst2", location="pkg:bdrun.data/sst2"), ".").train
    hate = load_splits(
        DatasetConfig(name="hate", location="hate_speech_stormfront", text_column="sentences", label_column="labels"),
        shared_data,
    ).train
    spam_folder = DatasetConfig(
        name="spam",
        format="lingspam",
        location="lingspam/lingspam_public/bare",
        files={"train": ["part1", "part2"], "dev": ["part3"], "test": ["part4"]},
    )
    spam = load_splits(spam_folder, shared_data)
    parts = (spam.train, spam.dev, spam.test)
    spam_texts = [t for p in parts for t, y in zip(p.texts, p.labels, strict=True) if y]
    return [
        [t for t, y in zip(sst2.texts, sst2.labels, strict=True) if y == 0],
        [t for t, y in zip(sst2.texts, sst2.labels, strict=True) if y == 1],
        [t for t, y in zip(hate.texts, hate.labels, strict=True) if y == 1],
        spam_texts,
    ]


def write_four_class(folder: Path, shared_data: Path, per_class: dict[str, int], words: bool = False) -> Path:
    """TSV files ``train/dev/test.tsv`` under ``folder`` with ``per_class[split]`` rows of each class; labels are
    class indices, or the words of :data:`NAMES` with ``words``."""
    rng = random.Random(0)
    pools = [
        [" ".join(t.split()[:16]) for t in rng.sample(pool, sum(per_class.values()))] for pool in _pools(shared_data)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in per_class.items():
        rows = [
            (text, NAMES[c] if words else str(c))
            for c, pool in enumerate(pools)
            for text in pool[start : start + count]
        ]
        rng.shuffle(rows)
        body = "".join(f"{' '.join(text.split())}\t{label}\n" for text, label in rows)
        (folder / f"{split}.tsv").write_text(f"sentence\tlabel\n{body}", encoding="utf-8")
        start += count
    return folder
