"""``bdrun-report``: a paper-style table from finished runs (markdown, LaTeX, CSV) and a CACC-vs-ASR scatter plot.

::

    bdrun-report outputs/multirun/2026-05-01/12-00-00 --rows defense --cols attack --metric final.cacc,final.asr

Rows and columns are config keys (a group such as ``attack``, or any key such as ``attack.poison_rate``;
several keys: ``--rows attack,dataset``). A cell holds every completed job with that row and column value; its
jobs may differ only in ``seed`` (anything else is an error naming the key, fix with ``--where`` or more
rows / columns), and the cell shows mean ± std over them: the sample standard deviation (n - 1), left out when
one seed. Several metrics (comma-separated) share a cell, joined by `` / `` (CACC / ASR, as papers do).

Metric names are those of :mod:`bdrun.results` (``purified.asr``, ``final.cacc``, ``delta.asr``, ...). Fractions
are shown in percent. The CSV is the tidy form of the same table (one line per cell and metric; mean, std and
n as raw fractions) for further processing.

``--versus KEY=VALUE`` (repeatable) names a reference row, e.g. ``--versus defense=none`` or, with several row
keys, one ``--versus`` per key that tells it apart. A second table then gives every other cell's last metric
minus the reference cell of its column, over the seeds both have (paired by seed, as benchmarks compare
settings: :mod:`bdrun.stats`), with the 95% interval and a verdict: higher / lower when the whole interval is
above / below zero, else not distinguishable. A row key that some runs lack (``attack.clnorm`` of RIPPLe's runs
in a table of attacks) reads ``—`` for them; a key that no run has is an error.

Every cell says how far to trust it (:mod:`bdrun.trust`): ``(n=K)`` is its number of seeds, ``‡`` marks a cell
from one seed (no spread measured), ``†`` a cell in which a model it measures collapsed in at least one seed
(one class for nearly every input, or CACC at the majority-class rate: its ASR measures the collapse, not a
backdoor). The markdown and LaTeX tables end with a legend of the marks they use; the CSV has a ``collapsed``
column (the number of the cell's seeds whose model collapsed).

The scatter plot puts each cell at (CACC, ASR) of the first metric's model (``final`` for ``final.asr``),
coloured by column, labelled by row.

This module is the command line; the cells are built in :mod:`bdrun.report_cells` and written in
:mod:`bdrun.report_render`, whose names it re-exports (scripts and tests import them from here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from bdrun.errors import BdrunError
from bdrun.report_cells import SEED_KEY, Report, Stat, build_report, scatter_metrics, stat
from bdrun.report_render import caption, cell_text, legend, log_wandb, to_latex, to_markdown, write_csv, write_scatter
from bdrun.results import Job, find_jobs

__all__ = [
    "SEED_KEY",
    "Report",
    "Stat",
    "build_report",
    "caption",
    "cell_text",
    "legend",
    "main",
    "scatter_metrics",
    "stat",
    "to_latex",
    "to_markdown",
    "write_csv",
    "write_scatter",
]


def parse_pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BdrunError(f"{option} {item!r} is not KEY=VALUE; e.g. {option} seed=1")
        pairs[key] = value
    return pairs


def check_metrics(jobs: list[Job], metrics: list[str]) -> None:
    """Each metric names a model and a number that some completed run has: a misspelt metric would otherwise
    fill the whole table with n/a. (With no completed run there is nothing to check against; the table says so.)"""
    known = sorted({name for job in jobs if job.status == "completed" for name in job.metrics})
    for metric in metrics:
        if "." not in metric:
            raise BdrunError(f"--metric {metric} names no model; use MODEL.METRIC, e.g. final.{metric}")
        if known and metric not in known:
            raise BdrunError(f"--metric {metric}: no completed run has it; choose among {', '.join(known)}")


def decimals(text: str) -> int:
    """``--digits``: a count of decimals (a negative one would fail in the middle of writing the table)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of decimals; use 0 or more, e.g. --digits 1")
    return value


def _keys(text: str | None) -> list[str]:
    return [k for k in (text or "").split(",") if k]


def usage_error(message: str) -> NoReturn:
    """argparse's error, as one line like every other bad input (argparse prints the usage first)."""
    print(f"bdrun-report: error: {message}; see bdrun-report --help", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bdrun-report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--rows", required=True, help="config key(s) for the rows, comma-separated (e.g. defense)")
    parser.add_argument("--cols", default="", help="config key(s) for the columns, comma-separated (e.g. attack)")
    parser.add_argument("--metric", default="final.cacc,final.asr", help="metric(s) per cell, comma-separated")
    parser.add_argument("--where", action="append", default=[], help="keep runs with KEY=VALUE (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="show VALUE as LABEL: VALUE=LABEL (repeatable)")
    parser.add_argument("--order", default="", help="row/column values to put first, in this order (comma-separated)")
    parser.add_argument("--clean-row", metavar="LABEL", help="add a first row with each column's clean model")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reference row (repeatable: one per row key it needs): add the last metric's difference to it, "
        "paired by seed, with its 95%% interval and verdict",
    )
    parser.add_argument("--digits", type=decimals, default=1, help="decimals shown (default 1)")
    parser.add_argument("--out", type=Path, help="output folder (default: the first folder)")
    parser.add_argument("--name", default="report", help="file name stem (default: report)")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log the table to this W&B project")
    parser.error = usage_error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    try:
        jobs = find_jobs(args.folders)
        check_metrics(jobs, _keys(args.metric))
        report = build_report(
            jobs,
            _keys(args.rows),
            _keys(args.cols),
            _keys(args.metric),
            where=parse_pairs(args.where, "--where"),
            clean_row=args.clean_row,
            labels=parse_pairs(args.label, "--label"),
            order=_keys(args.order),
            versus=parse_pairs(args.versus, "--versus"),
        )
        out = args.out or args.folders[0]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # under a file, a read-only or virtual file system (/proc)
            raise BdrunError(f"--out {out} cannot be created ({err.strerror}); pass a folder you can write") from None
        paths = {ext: out / f"{args.name}.{ext}" for ext in ("md", "tex", "csv", "png")}
        markdown = to_markdown(report, args.digits)
        paths["md"].write_text(f"{caption(report)}\n\n{markdown}")
        paths["tex"].write_text(to_latex(report, args.digits))
        write_csv(report, paths["csv"])
        write_scatter(report, paths["png"])
        if args.wandb:
            log_wandb(report, args.digits, paths["png"], args.wandb, out)
    except BdrunError as err:
        print(f"bdrun-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(caption(report), end="\n\n")
    print(markdown)
    for job in report.skipped:
        print(f"skipped: {job.run_dir} ({job.status}{': ' + job.error if job.error else ''})", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)


if __name__ == "__main__":
    main()
