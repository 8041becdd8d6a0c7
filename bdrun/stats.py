"""Seed statistics for benchmark verdicts: a paired difference with its 95% interval.

Benchmarks compare two settings run with the same seeds (bucketing on/off, gradient control against vanilla).
Pairing by seed removes what both runs of a seed share (the data order, the poisoned rows, the initial head), so
the interval of the per-seed differences is far tighter than two independent means' spreads suggest. The
interval is Student's t on the differences (few seeds: the normal quantile would be too narrow). A verdict reads
the interval, not the mean: "ahead" only when all of it is above zero.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t

from bdrun.errors import check


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of ``b − a`` over paired seeds and its two-sided confidence interval (None with one pair)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def verdict(self, tolerance: float = 0.0) -> str:
        """``ahead`` / ``behind`` when the whole interval is above / below ``±tolerance``, else
        ``not distinguishable`` (also with a single pair, which has no interval)."""
        if self.low is None or self.high is None:
            return "not distinguishable"
        if self.low > tolerance:
            return "ahead"
        if self.high < -tolerance:
            return "behind"
        return "not distinguishable"

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """``+1.23 [−0.40, +2.86]`` (scaled, e.g. fractions to points)."""
        mean = f"{scale * self.mean:+.{digits}f}"
        if self.low is None or self.high is None:
            return f"{mean} (one pair)"
        return f"{mean} [{scale * self.low:+.{digits}f}, {scale * self.high:+.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """``b − a`` per pair (same seed at the same position), with Student's t interval at ``confidence``."""
    check(len(a) == len(b) and len(a) > 0, f"paired_difference needs two equal, non-empty lists ({len(a)}, {len(b)})")
    differences = [y - x for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(differences)
    if len(differences) == 1:
        return PairedDifference(mean, None, None, 1)
    half = student_t.ppf(0.5 + confidence / 2, len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    return PairedDifference(mean, mean - half, mean + half, len(differences))
