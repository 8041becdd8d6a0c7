"""What the benchmark scripts share: launching the real ``bdrun`` command, reading the runs it leaves, formatting
numbers for markdown tables, and publishing a table between markers of a results file.

One copy of each, so that every script launches bdrun the same way (this interpreter, hence the venv's bdrun
without a console script) and reports a failure the same way, and so that every results file formats its numbers
by the rules ``bdrun-report`` uses (:func:`bdrun.results.percent`, :func:`bdrun.report.stat`). Scripts import it
as a sibling module (``from benchlib import ...``): Python puts a script's own folder first on ``sys.path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bdrun.report import stat
from bdrun.results import METRICS_FILE, Job, read_job
from bdrun.results import percent as pct
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK, COLLAPSED, SINGLE_SEED_LEGEND, SINGLE_SEED_MARK

__all__ = [
    "BDRUN",
    "BENCH_MARKERS",
    "COLLAPSE_MARK",
    "REPO",
    "SINGLE_SEED_MARK",
    "failure",
    "in_repo",
    "invocation",
    "launch",
    "launch_or_exit",
    "marked",
    "mean_std",
    "pct",
    "publish",
    "read_metrics",
    "sweep_runs",
    "trust_legend",
]

REPO = Path(__file__).resolve().parent.parent
BDRUN = [sys.executable, "-c", "from bdrun.cli import main; main()"]  # the real command line, by this interpreter
BENCH_MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


# -- launching ----------------------------------------------------------------------------------------------
def launch(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, capture: bool = True
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``bdrun args`` to the end; return the finished process and its wall seconds, start-up included.
    ``capture=False`` lets its output through to the console (then the process holds none of it)."""
    started = time.perf_counter()
    result = subprocess.run([*BDRUN, *args], cwd=cwd, env=env, capture_output=capture, text=True)
    return result, time.perf_counter() - started


def failure(result: subprocess.CompletedProcess, what: str) -> str:
    """A failed bdrun in one message: its status, what was run, and the end of its output."""
    output = (result.stdout or "") + (result.stderr or "")
    return f"bdrun failed with status {result.returncode} ({what}):\n{output[-3000:]}"


def launch_or_exit(
    args: list[str], *, what: str | None = None, **kwargs: Any
) -> tuple[subprocess.CompletedProcess, float]:
    """:func:`launch`, ending the script with :func:`failure` (``what``: default, the arguments) if bdrun fails."""
    result, seconds = launch(args, **kwargs)
    if result.returncode != 0:
        sys.exit(failure(result, what or " ".join(args)))
    return result, seconds


# -- reading ------------------------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's ``metrics.json`` as written: nested, with the stages and diagnostics that the flat metrics of
    :mod:`bdrun.results` leave out and that several tables read."""
    return json.loads((run_dir / METRICS_FILE).read_text())


def sweep_runs(sweep_dir: Path) -> list[tuple[Job, dict[str, Any]]]:
    """Every job of a sweep (one folder per job) that finished, in launch order, with its ``metrics.json``;
    ``job.overrides`` holds the job's overrides as typed (keys without their ``+``)."""
    jobs = [read_job(metrics.parent) for metrics in sweep_dir.glob(f"*/{METRICS_FILE}")]
    return [(job, read_metrics(job.run_dir)) for job in sorted(jobs, key=lambda job: job.num)]


# -- formatting ---------------------------------------------------------------------------------------------
def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sample std`` of ``scale`` times the values (percent by default), the std left out for one value
    as ``bdrun-report`` does; "n/a" for none."""
    result = stat([scale * value for value in values])
    if result is None:
        return "n/a"
    text = f"{result.mean:.{digits}f}"
    return text if result.std is None else f"{text} ± {result.std:.{digits}f}"


def marked(text: str, *models: dict[str, Any] | None) -> str:
    """``text`` with bdrun's collapse mark when any of the models behind it (their ``metrics.json`` entries, one
    per seed) was flagged collapsed (:mod:`bdrun.trust`): its CACC is a constant's and its ASR measures that."""
    return f"{text} {COLLAPSE_MARK}" if any(model and model.get(COLLAPSED) for model in models) else text


def trust_legend(lines: list[str], single_seed: bool) -> list[str]:
    """The legend lines under a table: the one-seed mark when ``single_seed``, and the collapse mark's meaning
    when ``lines`` carry it, else the statement that no model collapsed (so a table without marks says why)."""
    legend = [f"{SINGLE_SEED_MARK} {SINGLE_SEED_LEGEND}"] if single_seed else []
    if any(COLLAPSE_MARK in line for line in lines):
        return [*legend, f"{COLLAPSE_MARK} {COLLAPSE_LEGEND} (in at least one seed)"]
    return [*legend, f"No model collapsed (bdrun's `collapsed` flag, {COLLAPSE_MARK} where one did)."]


# -- publishing ---------------------------------------------------------------------------------------------
def in_repo(path: Path | str) -> str:
    """A path as docs show it: relative to the repository when inside it (docs never name one machine's
    folders), else as given."""
    full = Path(path).resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(path)


def invocation() -> str:
    """The command that ran this script, as a results file shows it: ``python scripts/NAME.py ARGS`` with any
    absolute path inside the repository made relative to it."""

    def shown(arg: str) -> str:
        return in_repo(arg) if Path(arg).is_absolute() else arg

    return " ".join(["python", in_repo(sys.argv[0]), *map(shown, sys.argv[1:])])


def publish(lines: list[str], out: Path | None, markers: tuple[str, str] = BENCH_MARKERS) -> None:
    """Print the generated markdown and, with ``out``, put it between ``markers`` in that file: the text around
    them (hand-written explanations) is kept; a file or markers not there yet are created."""
    body = "\n".join(lines)
    print(body)
    if out is None:
        return
    start, end = markers
    text = out.read_text() if out.exists() else f"# Benchmark\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{start}\n{body}\n{end}{tail}")
