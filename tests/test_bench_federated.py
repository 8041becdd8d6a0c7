"""The federated aggregator table (scripts/bench_federated.py) over seeds, on fabricated reports: no training.

Why: the regime table is read across seeds (issue 23 asks for at least three); a row must show mean ± std, say
how many seeds it holds, mark a one-seed row and a collapsed model (bdrun's flag), and count the regime over all
seeds' malicious client-rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_federated import row


def federation(recall: float, inside: bool) -> dict:
    """One federation of one round: client 0 malicious, inside or outside the honest L2 spread."""
    l2 = [1.0 if inside else 9.0, 2.0, 3.0]
    record = {"clients": [0, 1, 2], "malicious": [0], "l2_score": l2, "selected_strength": [5.0, 1.0, 1.0]}
    return {"detection_precision": None, "detection_recall": recall, "overhead": 1.1, "client_seconds": 10.0,
            "round_seconds": 11.0, "rounds": [record]}  # fmt: skip


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")[1:-1]]


def test_seeds_give_mean_std_marks_and_summed_regime_counts() -> None:
    models = [{"cacc": 0.80, "asr": 1.0, "collapsed": False}, {"cacc": 0.50, "asr": 1.0, "collapsed": True}]
    line = cells(row("krum", models, [federation(0.5, True), federation(1.0, False)]))
    assert line[0] == "krum (n=2)"
    assert line[1] == "65.0 ± 21.2 †" and line[2] == "100.0 ± 0.0 †"  # one collapsed seed marks the cell
    assert line[3] == "—"  # it dropped nobody in any seed: no precision
    assert line[4] == "75.0 ± 35.4"
    assert line[7] == "1 / 2 of 2"  # inside L2 in one seed, above on the selected coordinates in both


def test_one_seed_is_marked_and_a_healthy_model_is_not() -> None:
    line = cells(row("median", [{"cacc": 0.83, "asr": 0.8, "collapsed": False}], [federation(0.0, True)]))
    assert line[0] == "median ‡" and line[1] == "83.0" and "†" not in " ".join(line)
