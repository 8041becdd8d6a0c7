"""The sweep summary: at the end of every multirun, one table over all jobs (terminal, summary.csv, summary.md).

A Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/config.yaml``): Hydra calls ``on_multirun_end``
in the launching process once every job has returned, whatever the launcher. One row per job: the swept keys,
the job's status, the metrics it has (CACC / ASR / side effect of each model, detector metrics) and, for a
failed job, its one-line error. The CSV keeps raw fractions; the terminal and markdown show percent.

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
from rich.console import Console
from rich.table import Table

from bdrun.results import SUMMARY_METRICS, Job, find_jobs, format_metric, swept_keys

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


def summary_rows(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """The summary as records (raw values): job, swept keys, status, metrics, error."""
    keys, metrics = summary_columns(jobs)
    header = ["job", *keys, "status", *metrics, "error"]
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.num, **{k: job.value(k) for k in keys}, "status": job.status}
        row.update({m: job.metrics.get(m) for m in metrics})
        row["error"] = job.error or ""
        rows.append(row)
    return header, rows


def _cells(header: list[str], row: dict[str, Any]) -> list[str]:
    metrics = set(SUMMARY_METRICS)
    return [format_metric(h, row[h]) if h in metrics else ("" if row[h] is None else str(row[h])) for h in header]


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
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(header, row)) + " |" for row in rows]
    (sweep_dir / SUMMARY_MD).write_text("\n".join(lines) + "\n")

    # The terminal table: short two-line metric headers; errors are printed under it, not in a column.
    shown = header[:-1]
    table = Table(title=title, box=box.SIMPLE_HEAD, caption="metrics in %", caption_justify="left")
    for h in shown:
        if h in SUMMARY_METRICS:
            role, metric = h.split(".")
            table.add_column(f"{ROLE_LABELS[role]}\n{METRIC_LABELS.get(metric, metric)}", justify="right", no_wrap=True)
        else:
            table.add_column(h, justify="right" if h == "job" else "left", no_wrap=True)
    for row in rows:
        style = None if row["status"] == "completed" else "red"
        table.add_row(*_cells(shown, row), style=style)
    return table


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep folder when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bdrun.progress import console

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        jobs = find_jobs([sweep_dir])
        table = write_summary(sweep_dir, jobs)
        # As wide as the table needs (a narrow terminal wraps lines rather than cutting every cell to "…").
        width = console.measure(table, options=console.options.update(width=1000)).maximum
        Console(stderr=True, width=max(console.width, width)).print(table)
        for job in jobs:
            if job.status != "completed":
                console.print(f"job {job.num} {job.status}: {job.error or 'no status recorded'} ({job.run_dir})")
        console.print(f"summary: {sweep_dir / SUMMARY_MD}, {sweep_dir / SUMMARY_CSV}")
        failed = [job for job in jobs if job.status != "completed"]
        if failed:
            print(f"bdrun: error: {len(failed)} of {len(jobs)} jobs failed; see the summary", file=sys.stderr)
            sys.exit(1)
