"""The paired-seed interval that benchmark verdicts read."""

import math

import pytest

from bdrun.errors import BdrunError
from bdrun.stats import paired_difference


def test_interval_is_students_t_on_the_per_seed_differences() -> None:
    a = [0.80, 0.82, 0.84]
    b = [0.81, 0.84, 0.84]  # differences 0.01, 0.02, 0.00: mean 0.01, sample std 0.01
    result = paired_difference(a, b)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, df=2)
    assert result.mean == pytest.approx(0.01)
    assert result.low == pytest.approx(0.01 - half)
    assert result.high == pytest.approx(0.01 + half)
    assert result.verdict() == "not distinguishable"


def test_pairing_removes_what_a_seed_shares() -> None:
    # Seeds differ by 10 points, the setting adds 1 point to each: unpaired means overlap, pairs do not.
    a = [0.70, 0.80, 0.90]
    b = [0.71, 0.81, 0.91 + 1e-4]
    assert paired_difference(a, b).verdict() == "ahead"
    assert paired_difference(b, a).verdict() == "behind"


def test_one_pair_has_no_interval() -> None:
    result = paired_difference([0.5], [0.6])
    assert result.low is None and result.verdict() == "not distinguishable"
    assert result.text() == "+10.00 (one pair)"


def test_unequal_lists_are_refused() -> None:
    with pytest.raises(BdrunError, match="equal"):
        paired_difference([0.1, 0.2], [0.1])
