"""The sweep summary: at the end of every multirun, one table over all jobs (terminal, summary.csv, summary.md).

A Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/config.yaml``): Hydra calls ``on_multirun_end``
in the launching process once every job has returned, whatever the launcher. One row per job: the swept keys,
the job's status, the metrics it has (CACC / ASR / side effect of each model, detector metrics) and, for a
failed job, its one-line error. The CSV keeps raw fractions; the terminal and markdown show percent.

Trust marks as in ``bdrun-report`` (:mod:`bdrun.trust`): ``seeds`` counts the completed jobs that differ from
this one only in ``seed`` (``‡`` when it is the only one: no spread measured), ``collapsed`` names the models
of the job that collapsed (predicting one class for nearly every clean test input), and in the terminal and
markdown their metrics carry ``†``: such a CACC is a constant's and such an ASR measures the collapse.

A sweep with a failed job exits with status 1 after the summary is written (the jobs themselves keep going:
see ``bdrun.cli``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich import box
from rich.table import Table

from bdrun.report import SEED_KEY
from bdrun.results import ROLES, SUMMARY_METRICS, Job, find_jobs, format_metric, swept_keys
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK, COLLAPSED, SINGLE_SEED_LEGEND, SINGLE_SEED_MARK

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
ROLE_LABELS = {"clean": "clean", "backdoored": "backd.", "purified": "purif."}
METRIC_LABELS = {
    "cacc": "CACC",
    "asr": "ASR",
    "side_effect": "side",
    "auroc": "AUROC",
    "far_at_frr1": "FAR@1",
    "far_at_frr5": "FAR@5",
    "frr": "FRR",
    "latency_ratio": "cost ×",
}


def summary_columns(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """(swept keys, metric names present in some job), in display order."""
    metrics = [m for m in SUMMARY_METRICS if any(m in job.metrics for job in jobs)]
    return swept_keys(jobs), metrics


def seed_counts(jobs: list[Job], keys: list[str]) -> dict[int, int]:
    """Per completed job (by position), the completed jobs with its values of every swept key but the seed."""
    others = [k for k in keys if k != SEED_KEY]
    done = [(i, tuple(job.value(k) for k in others)) for i, job in enumerate(jobs) if job.status == "completed"]
    return {i: sum(values == other for _, other in done) for i, values in done}


def collapsed_roles(job: Job) -> list[str]:
    return [role for role in ROLES if job.metrics.get(f"{role}.{COLLAPSED}", 0.0) > 0]


def summary_rows(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """The summary as records (raw values): job, swept keys, status, metrics, seeds, collapsed models, error."""
    keys, metrics = summary_columns(jobs)
    header = ["job", *keys, "status", *metrics, "seeds", "collapsed", "error"]
    seeds = seed_counts(jobs, keys)
    rows = []
    for i, job in enumerate(jobs):
        row: dict[str, Any] = {"job": job.num, **{k: job.value(k) for k in keys}, "status": job.status}
        row.update({m: job.metrics.get(m) for m in metrics})
        row["seeds"] = seeds.get(i)
        row["collapsed"] = " ".join(collapsed_roles(job))
        row["error"] = job.error or ""
        rows.append(row)
    return header, rows


def _cells(header: list[str], row: dict[str, Any], job: Job) -> list[str]:
    """A row as text, with the trust marks (the CSV has the raw values and no marks)."""
    metrics = set(SUMMARY_METRICS)
    cells = []
    for h in header:
        if h in metrics:
            mark = f" {COLLAPSE_MARK}" if row[h] is not None and job.collapsed(h) else ""
            cells.append(format_metric(h, row[h]) + mark)
        elif h == "seeds" and row[h] == 1:
            cells.append(f"1 {SINGLE_SEED_MARK}")
        else:
            cells.append("" if row[h] is None else str(row[h]))
    return cells


def legend(rows: list[dict[str, Any]]) -> list[str]:
    """The marks the summary uses, one line each."""
    lines = []
    if any(row["collapsed"] for row in rows):
        lines.append(f"{COLLAPSE_MARK} {COLLAPSE_LEGEND}")
    if any(row["seeds"] == 1 for row in rows):
        lines.append(f"{SINGLE_SEED_MARK} {SINGLE_SEED_LEGEND}")
    return lines


def write_summary(sweep_dir: Path, jobs: list[Job]) -> Table:
    """Write summary.csv and summary.md into ``sweep_dir``; return the same table for the terminal."""
    header, rows = summary_rows(jobs)
    with (sweep_dir / SUMMARY_CSV).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)

    failed = [row for row in rows if row["status"] != "completed"]
    title = f"sweep summary: {len(rows)} jobs, {len(rows) - len(failed)} completed ({sweep_dir})"
    lines = [f"# {title}", "", "Metrics in % (side effect: % of clean test predictions changed).", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, job in zip(rows, jobs, strict=True):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(header, row, job)) + " |")
    notes = legend(rows)
    lines += ["", *notes] if notes else []
    (sweep_dir / SUMMARY_MD).write_text("\n".join(lines) + "\n")

    # The terminal table: short two-line metric headers; errors are printed under it, not in a column.
    shown = header[:-1]
    caption = "\n".join(["metrics in %", *notes])
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
    for h in shown:
        if h in SUMMARY_METRICS:
            role, metric = h.split(".")
            table.add_column(f"{ROLE_LABELS[role]}\n{METRIC_LABELS.get(metric, metric)}", justify="right", no_wrap=True)
        else:
            table.add_column(h, justify="right" if h == "job" else "left", no_wrap=True)
    for row, job in zip(rows, jobs, strict=True):
        style = None if row["status"] == "completed" else "red"
        table.add_row(*_cells(shown, row, job), style=style)
    return table


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep folder when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bdrun.progress import console, print_whole

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        jobs = find_jobs([sweep_dir])
        print_whole(write_summary(sweep_dir, jobs))
        for job in jobs:
            if job.status != "completed":
                console.print(f"job {job.num} {job.status}: {job.error or 'no status recorded'} ({job.run_dir})")
        console.print(f"summary: {sweep_dir / SUMMARY_MD}, {sweep_dir / SUMMARY_CSV}")
        failed = [job for job in jobs if job.status != "completed"]
        if failed:
            print(f"bdrun: error: {len(failed)} of {len(jobs)} jobs failed; see the summary", file=sys.stderr)
            sys.exit(1)
