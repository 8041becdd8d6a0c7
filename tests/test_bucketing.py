"""Length-bucketed batches: every row once per epoch, a seeded order, and far less padding than plain shuffling."""

from __future__ import annotations

import math
import random
from pathlib import Path

from bdrun.training import TrainerConfig, epoch_batches
from tests.test_pipeline import keys

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(3, 64) for _ in range(1003)]
BUCKETED = TrainerConfig(batch_size=16, bucketing=True, bucket_batches=8)


def padded_tokens(batches: list[list[int]]) -> int:
    return sum(len(rows) * max(LENGTHS[i] for i in rows) for rows in batches)


def test_every_row_exactly_once_per_epoch_in_full_batches() -> None:
    for epoch in range(3):
        batches = epoch_batches(LENGTHS, BUCKETED, seed=1, epoch=epoch)
        assert sorted(i for rows in batches for i in rows) == list(range(len(LENGTHS)))
        assert len(batches) == math.ceil(len(LENGTHS) / 16)  # same steps per epoch as without bucketing
        assert sum(len(rows) != 16 for rows in batches) == 1  # only one short batch (1003 = 62 * 16 + 11)


def test_order_is_a_function_of_seed_and_epoch() -> None:
    assert epoch_batches(LENGTHS, BUCKETED, 1, 0) == epoch_batches(LENGTHS, BUCKETED, 1, 0)
    assert epoch_batches(LENGTHS, BUCKETED, 1, 0) != epoch_batches(LENGTHS, BUCKETED, 2, 0)
    assert epoch_batches(LENGTHS, BUCKETED, 1, 0) != epoch_batches(LENGTHS, BUCKETED, 1, 1)


def test_bucketing_removes_most_padding_and_leads_with_the_longest_batch() -> None:
    plain = epoch_batches(LENGTHS, TrainerConfig(batch_size=16, bucketing=False), 1, 0)
    bucketed = epoch_batches(LENGTHS, BUCKETED, 1, 0)
    real = sum(LENGTHS)
    assert padded_tokens(bucketed) - real < 0.2 * (padded_tokens(plain) - real)
    assert max(LENGTHS[i] for i in bucketed[0]) == max(LENGTHS)


def test_bucketing_enters_the_training_key_only_when_on(tmp_path: Path) -> None:
    plain = keys(["trainer.bucketing=false"], tmp_path)
    unkeyed = ["trainer.bucketing=false", "trainer.bucket_batches=7", "trainer.compile=true", "trainer.tf32=false"]
    assert keys(unkeyed, tmp_path) == plain
    assert keys([], tmp_path)["train"] != plain["train"]  # on by default
    assert keys(["trainer.bucket_batches=7"], tmp_path)["train"] != keys([], tmp_path)["train"]
