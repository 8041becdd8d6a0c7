"""The README's attack table (scripts/bench_attacks.py) carries bdrun's trust marks, on fabricated run folders.

Why: the table is where a reader decides whether an attack works; a backdoored model that predicts one class has
ASR 100 without any backdoor, and a one-seed row has no spread. These tests pin that the script marks the first
from bdrun's ``collapsed`` flag and the second from the number of seeds it found, and never marks a healthy row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_attacks import ROWS, run_dir, table
from benchlib import trust_legend

BADNETS, ADDSENT = list(ROWS)[:2]


def fabricate(root: Path, label: str, seed: int, cacc: float, asr: float, collapsed: bool = False) -> None:
    folder = run_dir(root, label, seed)
    folder.mkdir(parents=True)
    clean = {"cacc": 0.88, "asr": 0.12, "collapsed": False}
    dirty = {"cacc": cacc, "asr": asr, "side_effect": 0.05, "collapsed": collapsed}
    (folder / "metrics.json").write_text(json.dumps({"clean": clean, "backdoored": dirty}))


def test_a_collapsed_model_is_marked_and_a_healthy_one_is_not(tmp_path: Path) -> None:
    fabricate(tmp_path, BADNETS, 42, 0.87, 1.0)
    fabricate(tmp_path, ADDSENT, 42, 0.5008, 1.0, collapsed=True)  # one class for every input
    lines = table(tmp_path, [42])
    healthy, collapsed = lines[2], lines[3]
    assert "†" not in healthy and "87.00" in healthy and "100.00" in healthy
    cells = [c.strip() for c in collapsed.split("|")[1:-1]]
    assert cells[1] == "88.00"  # the clean model did not collapse
    assert cells[2] == "50.08 †" and cells[5] == "100.00 †"
    assert "‡" in healthy and "‡" in collapsed  # one seed each
    legend = trust_legend(lines, single_seed=True)
    assert legend[0].startswith("‡") and legend[1].startswith("†")


def test_seeds_give_mean_and_std_and_one_collapsed_seed_marks_the_cell(tmp_path: Path) -> None:
    fabricate(tmp_path, BADNETS, 1, 0.86, 1.0)
    fabricate(tmp_path, BADNETS, 2, 0.88, 0.98)
    fabricate(tmp_path, BADNETS, 3, 0.50, 1.0, collapsed=True)
    row = table(tmp_path, [1, 2, 3])[2]
    assert "(n=3)" in row and "‡" not in row
    assert "74.67 ± 21.39 †" in row and "99.33 ± 1.15 †" in row
    assert len(table(tmp_path, [1, 2, 3])) == 3  # rows without folders are left out
    assert trust_legend(["| a | 1 |"], single_seed=False) == [
        "No model collapsed (bdrun's `collapsed` flag, † where one did)."
    ]
