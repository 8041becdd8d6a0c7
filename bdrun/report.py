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

Every cell says how far to trust it (:mod:`bdrun.trust`): ``(n=K)`` is its number of seeds, ``‡`` marks a cell
from one seed (no spread measured), ``†`` a cell in which a model it measures collapsed in at least one seed
(one class for nearly every input, or CACC at the majority-class rate: its ASR measures the collapse, not a
backdoor). The markdown and LaTeX tables end with a legend of the marks they use; the CSV has a ``collapsed``
column (the number of the cell's seeds whose model collapsed).

The scatter plot puts each cell at (CACC, ASR) of the first metric's model (``final`` for ``final.asr``),
coloured by column, labelled by row.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import statistics
import sys
from pathlib import Path
from typing import NoReturn

from bdrun.errors import BdrunError
from bdrun.results import PERCENT_METRICS, Job, find_jobs, format_metric, swept_keys
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK, SINGLE_SEED_LEGEND, SINGLE_SEED_MARK

SEED_KEY = "seed"
LATEX_MARKS = {COLLAPSE_MARK: r"$^\dagger$", SINGLE_SEED_MARK: r"$^\ddagger$"}


@dataclasses.dataclass
class Stat:
    mean: float
    std: float | None  # None with one value
    n: int


def stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values))


@dataclasses.dataclass
class Report:
    """The table: ``cells[(row, col)][metric]`` over the given row / column labels (in first-seen order)."""

    row_keys: list[str]
    col_keys: list[str]
    metrics: list[str]
    rows: list[tuple[str, ...]]
    cols: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Stat | None]]
    labels: dict[str, str]  # value -> display label
    skipped: list[Job]  # jobs that did not complete
    seeds: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = dataclasses.field(default_factory=dict)  # runs per cell
    # cell -> metric -> how many of the cell's runs measured a collapsed model with that metric (bdrun.trust)
    collapsed: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, int]] = dataclasses.field(default_factory=dict)

    def label(self, values: tuple[str, ...]) -> str:
        return ", ".join(self.labels.get(v, v) for v in values) if values else ""


def _values(job: Job, keys: list[str]) -> tuple[str, ...]:
    values = tuple(job.value(k) for k in keys)
    for key, value in zip(keys, values, strict=True):
        if value is None:
            raise BdrunError(f"run {job.run_dir} has no config key '{key}'; choose --rows/--cols among its keys")
    return values  # type: ignore[return-value]


def scatter_metrics(metrics: list[str]) -> tuple[str, str]:
    """The plot's (x, y): CACC and ASR of the model of the first metric (``purified`` for ``purified.asr``)."""
    role = metrics[0].split(".", 1)[0]
    return f"{role}.cacc", f"{role}.asr"


def _ordered(values: list[tuple[str, ...]], order: list[str]) -> list[tuple[str, ...]]:
    """Values named in ``order`` first, in that order (by their first key), then the rest as first seen."""
    rank = {v: i for i, v in enumerate(order)}
    return sorted(values, key=lambda v: rank.get(v[0], len(rank)) if v else 0)


def _one_per_seed(jobs: list[Job]) -> list[Job]:
    seen: dict[str | None, Job] = {}
    for job in jobs:
        seen.setdefault(job.value(SEED_KEY), job)
    return list(seen.values())


def build_report(
    jobs: list[Job],
    row_keys: list[str],
    col_keys: list[str],
    metrics: list[str],
    where: dict[str, str] | None = None,
    clean_row: str | None = None,
    labels: dict[str, str] | None = None,
    order: list[str] | None = None,
) -> Report:
    """Group completed jobs into cells and reduce each metric to mean ± std over seeds.

    ``clean_row``: the label of an extra first row with the clean model of each column (the metrics with their
    model replaced by ``clean``), one job per seed, since every job of a column shares that clean model.
    """
    selected = [j for j in jobs if all(j.value(k) == v for k, v in (where or {}).items())]
    if not selected:
        raise BdrunError(f"no runs match --where {where}; check the keys and values against the runs' configs")
    done = [j for j in selected if j.status == "completed"]
    free = [k for k in swept_keys(selected) if k not in (*row_keys, *col_keys, SEED_KEY)]
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Job]] = {}
    for job in done:
        groups.setdefault((_values(job, row_keys), _values(job, col_keys)), []).append(job)
    for (row, col), members in groups.items():
        for key in free:
            if len({j.value(key) for j in members}) > 1:
                raise BdrunError(
                    f"cell {row_keys}={list(row)} {col_keys}={list(col)} mixes runs with different {key}; "
                    f"add it to --rows/--cols or pick one with --where {key}=..."
                )
        seeds = [j.value(SEED_KEY) for j in members]
        if len(set(seeds)) < len(seeds):
            raise BdrunError(
                f"cell {row_keys}={list(row)} {col_keys}={list(col)} has two runs with the same seed "
                f"({members[0].run_dir}, ...); pass each run folder once"
            )
    # Rows and columns of failed jobs too: their cells read n/a rather than vanish.
    rows = _ordered(list(dict.fromkeys(_values(j, row_keys) for j in selected)), order or [])
    cols = _ordered(list(dict.fromkeys(_values(j, col_keys) for j in selected)), order or [])
    computed = list(dict.fromkeys([*metrics, *scatter_metrics(metrics)]))  # the plot's CACC / ASR too
    cells = {
        cell: {m: stat([j.metrics[m] for j in members if m in j.metrics]) for m in computed}
        for cell, members in groups.items()
    }
    seeds = {cell: len(members) for cell, members in groups.items()}
    collapsed = {cell: {m: sum(j.collapsed(m) for j in members) for m in computed} for cell, members in groups.items()}
    if clean_row is not None:
        clean_label = (clean_row,) * max(len(row_keys), 1)
        rows.insert(0, clean_label)
        for col in cols:
            members = _one_per_seed([j for (_, c), js in groups.items() if c == col for j in js])
            clean_metrics = {m: "clean." + m.split(".", 1)[1] for m in computed}
            cells[(clean_label, col)] = {
                m: stat([j.metrics[c] for j in members if c in j.metrics]) for m, c in clean_metrics.items()
            }
            seeds[(clean_label, col)] = len(members)
            collapsed[(clean_label, col)] = {m: sum(j.collapsed(c) for j in members) for m, c in clean_metrics.items()}
    skipped = [j for j in selected if j not in done]
    return Report(row_keys, col_keys, metrics, rows, cols, cells, labels or {}, skipped, seeds, collapsed)


# -- rendering ----------------------------------------------------------------------------------------------
def _number(metric: str, value: float, digits: int) -> str:
    return format_metric(metric, value, digits)


def cell_text(report: Report, row: tuple[str, ...], col: tuple[str, ...], digits: int, pm: str) -> str:
    stats = report.cells.get((row, col))
    if stats is None:
        return "n/a"
    parts = []
    for metric in report.metrics:
        s = stats[metric]
        if s is None:
            parts.append("—")
        elif s.std is None:
            parts.append(_number(metric, s.mean, digits))
        else:
            parts.append(f"{_number(metric, s.mean, digits)}{pm}{_number(metric, s.std, digits)}")
    return f"{' / '.join(parts)} (n={report.seeds[(row, col)]}){cell_marks(report, row, col)}"


def cell_marks(report: Report, row: tuple[str, ...], col: tuple[str, ...]) -> str:
    """``†`` when a model the cell measures collapsed in some seed, ``‡`` when the cell has one seed."""
    collapsed = any(report.collapsed[(row, col)].get(m) for m in report.metrics)
    return (COLLAPSE_MARK if collapsed else "") + (SINGLE_SEED_MARK if report.seeds[(row, col)] == 1 else "")


def legend(report: Report) -> list[str]:
    """One line per mark the table uses, saying what it means."""
    used = "".join(cell_marks(report, *cell) for cell in report.cells)
    marks = ((COLLAPSE_MARK, COLLAPSE_LEGEND), (SINGLE_SEED_MARK, SINGLE_SEED_LEGEND))
    return [f"{mark} {text}" for mark, text in marks if mark in used]


def _header(report: Report) -> list[str]:
    corner = ", ".join(report.row_keys) or "metric"
    return [corner, *(report.label(c) or " / ".join(report.metrics) for c in report.cols)]


def caption(report: Report) -> str:
    counts = sorted({s.n for stats in report.cells.values() for s in stats.values() if s is not None})
    seeds = "/".join(str(n) for n in counts) or "0"
    percent = any(m.rsplit(".", 1)[-1] in PERCENT_METRICS for m in report.metrics)
    unit = " in %" if percent else ""
    return f"{' / '.join(report.metrics)}{unit}; mean ± std over seeds (n = {seeds}; each cell shows its own n)"


def to_markdown(report: Report, digits: int) -> str:
    header = _header(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        cells = [cell_text(report, row, col, digits, " ± ") for col in report.cols]
        lines.append("| " + " | ".join([report.label(row), *cells]) + " |")
    notes = legend(report)
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def _tex(text: str) -> str:
    """Plain text for LaTeX: special characters escaped, markdown emphasis dropped, `code` as \\texttt."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", text.replace("*", ""))


def _tex_marks(text: str) -> str:
    for mark, tex in LATEX_MARKS.items():
        text = text.replace(mark, tex)
    return text


def to_latex(report: Report, digits: int) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``) with the caption as a comment above it."""
    header = [_tex(h) for h in _header(report)]
    lines = [
        "% " + _tex(caption(report)).replace("±", r"$\pm$"),
        r"\begin{tabular}{l" + "c" * len(report.cols) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in report.rows:
        cells = [_tex_marks(cell_text(report, row, col, digits, r" $\pm$ ")) for col in report.cols]
        lines.append(" & ".join([_tex(report.label(row)), *(c.replace("—", "--") for c in cells)]) + r" \\")
    lines.append(r"\bottomrule")
    width = len(report.cols) + 1
    lines += [rf"\multicolumn{{{width}}}{{l}}{{\footnotesize {_tex_marks(_tex(note))}}} \\" for note in legend(report)]
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def write_csv(report: Report, path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*report.row_keys, *report.col_keys, "metric", "mean", "std", "n", "collapsed"])
        for (row, col), stats in report.cells.items():
            for metric, s in stats.items():
                if s is not None:
                    std = "" if s.std is None else repr(s.std)
                    writer.writerow([*row, *col, metric, repr(s.mean), std, s.n, report.collapsed[(row, col)][metric]])


def write_scatter(report: Report, path: Path) -> None:
    """CACC (x) against ASR (y) of the first metric's model, one point per cell, error bars = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_metric, y_metric = scatter_metrics(report.metrics)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for col in report.cols:
        points = []
        for row in report.rows:
            stats = report.cells.get((row, col), {})
            x, y = stats.get(x_metric), stats.get(y_metric)
            if x is not None and y is not None:
                points.append((100 * x.mean, 100 * y.mean, 100 * (x.std or 0.0), 100 * (y.std or 0.0), row))
        if points:
            xs, ys, xerr, yerr, rows = zip(*points, strict=True)
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=report.label(col) or None)
            for x, y, row in zip(xs, ys, rows, strict=True):
                ax.annotate(report.label(row).strip("*"), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{x_metric} (%)")
    ax.set_ylabel(f"{y_metric} (%)")
    ax.grid(alpha=0.3)
    if any(report.label(c) for c in report.cols):
        ax.legend(fontsize=8, title=", ".join(report.col_keys))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_wandb(report: Report, digits: int, png: Path, project: str, out_dir: Path) -> None:
    """Log the table (and the plot) as a W&B run of job type ``report``, offline unless WANDB_MODE says otherwise."""
    import wandb

    from bdrun.tracking import init_wandb

    run = init_wandb(project=project, job_type="report", dir=str(out_dir), mode="offline")
    header = _header(report)
    data = [[report.label(r), *(cell_text(report, r, c, digits, " ± ") for c in report.cols)] for r in report.rows]
    run.log({"report/table": wandb.Table(columns=header, data=data), "report/scatter": wandb.Image(str(png))})
    run.finish()


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
