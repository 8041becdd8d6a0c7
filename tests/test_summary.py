"""The sweep summary: one row per job of a multirun, failed jobs included, in the terminal, CSV and markdown, with
each job's seed count and collapsed models marked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from bdrun.results import find_jobs
from bdrun.summary import write_summary
from tests.conftest import TINY, run_cli
from tests.test_report import fake_run


def test_a_2x2_sweep_summary_has_one_row_per_job_with_failures_listed(tmp_path: Path) -> None:
    # 2 defenses x 2 poison rates; rate 0.9 asks for more poisoned samples than the 96-sample training set has
    # non-target ones: preflight cannot know that (it needs the data), so those two jobs fail at their data check
    # (and one poisoned model serves both defenses of rate 0.1).
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "defense=none,fine_tuning", "attack.poison_rate=0.1,0.9", f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]  # the sweep ran every job, then reports the failures
    assert "2 of 4 jobs failed" in log
    assert "sweep summary: 4 jobs, 2 completed" in log

    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0]) == [
        "job",
        "defense",
        "attack.poison_rate",
        "status",
        "clean.cacc",
        "clean.asr",
        "backdoored.cacc",
        "backdoored.asr",
        "backdoored.side_effect",
        "purified.cacc",
        "purified.asr",
        "purified.side_effect",
        "seeds",
        "collapsed",
        "error",
    ]
    by_job = {(r["defense"], r["attack.poison_rate"]): r for r in rows}
    assert set(by_job) == {("none", "0.1"), ("none", "0.9"), ("fine_tuning", "0.1"), ("fine_tuning", "0.9")}
    for defense in ("none", "fine_tuning"):
        failed = by_job[(defense, "0.9")]
        assert failed["status"] == "failed" and "attack.poison_rate=0.9" in failed["error"]
        assert failed["clean.cacc"] == ""
        done = by_job[(defense, "0.1")]
        assert done["status"] == "completed" and done["error"] == ""
        metrics = json.loads(next(sweep.glob(f"{done['job']}_*/metrics.json")).read_text())
        assert float(done["backdoored.asr"]) == metrics["backdoored"]["asr"]
        assert (done["purified.cacc"] != "") == (defense == "fine_tuning")

    markdown = (sweep / "summary.md").read_text()
    assert markdown.count("| failed |") == 2 and markdown.count("| completed |") == 2
    assert len(list(sweep.glob("*/status.json"))) == 4  # every job recorded its outcome


def test_the_summary_marks_collapsed_models_and_single_seed_jobs(tmp_path: Path) -> None:
    # BadNets over two seeds, its backdoored model collapsed in seed 2; AddSent on one seed, healthy; a failed job.
    runs = [
        ("badnets", 1, (0.9, 0.1, 0.88, 1.0), ()),
        ("badnets", 2, (0.9, 0.1, 0.50, 1.0), ("backdoored",)),
        ("addsent", 1, (0.9, 0.1, 0.87, 0.97), ()),
        ("addsent", 2, None, ()),
    ]
    for num, (attack, seed, values, collapsed) in enumerate(runs):
        fake_run(tmp_path / str(num), num, attack, "none", seed, values, collapsed=collapsed)
    table = write_summary(tmp_path, find_jobs([tmp_path]))

    with (tmp_path / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["seeds"], r["collapsed"]) for r in rows] == [("2", ""), ("2", "backdoored"), ("1", ""), ("", "")]
    assert rows[1]["backdoored.asr"] == "1.0"  # the CSV keeps the raw number; the flag is its own column

    markdown = (tmp_path / "summary.md").read_text()
    assert "| 1 | badnets | 2 | completed | 90.00 | 10.00 | 50.00 † | 100.00 † | 2 | backdoored |  |" in markdown
    assert "| 2 | addsent | 1 | completed | 90.00 | 10.00 | 87.00 | 97.00 | 1 ‡ |  |  |" in markdown
    assert "\n† a model of this cell collapsed" in markdown and "\n‡ one seed" in markdown

    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    assert "50.00 †" in text and "1 ‡" in text and "one seed" in text
