"""The writers of a :class:`~bdrun.report_cells.Report`: markdown, LaTeX (booktabs), CSV, the CACC-vs-ASR
scatter plot and a W&B table, each cell with its trust marks (:mod:`bdrun.trust`).

They only read a built report, so a script that builds its own (``scripts/bench_defenses.py``) renders it the
same way as ``bdrun-report``; :mod:`bdrun.report` re-exports them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from bdrun.report_cells import Report, scatter_metrics
from bdrun.results import PERCENT_METRICS, format_metric
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK, SINGLE_SEED_LEGEND, SINGLE_SEED_MARK

LATEX_MARKS = {COLLAPSE_MARK: r"$^\dagger$", SINGLE_SEED_MARK: r"$^\ddagger$"}


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
    out = [*lines, *(["", *notes] if notes else [])]
    if report.reference is not None:
        out += ["", versus_caption(report), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in _others(report):
            cells = [versus_text(report, row, col, digits) for col in report.cols]
            out.append("| " + " | ".join([report.label(row), *cells]) + " |")
    return "\n".join(out) + "\n"


# PairedDifference's verdict, in words that fit any metric (a higher ASR is the attacker's gain, a defense's loss)
VERDICT_WORDS = {"ahead": "higher", "behind": "lower", "not distinguishable": "not distinguishable"}


def _others(report: Report) -> list[tuple[str, ...]]:
    return [row for row in report.rows if row != report.reference]


def versus_caption(report: Report) -> str:
    metric = report.metrics[-1]
    return (
        f"{metric} minus the row {report.label(report.reference or ())} of the same column, paired by seed: mean "
        "[95% interval, Student's t] and the verdict (higher / lower when the whole interval is above / below 0, "
        "else not distinguishable); n = shared seeds"
    )


def versus_text(report: Report, row: tuple[str, ...], col: tuple[str, ...], digits: int) -> str:
    difference = report.versus.get((row, col))
    if difference is None:
        return "n/a"
    percent = report.metrics[-1].rsplit(".", 1)[-1] in PERCENT_METRICS
    words = VERDICT_WORDS[difference.verdict()]
    return f"{difference.text(100.0 if percent else 1.0, digits)} {words} (n={difference.n})"


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
    if report.reference is not None:  # a second tabular: the differences to the reference row
        lines += ["", "% " + _tex(versus_caption(report)), r"\begin{tabular}{l" + "c" * len(report.cols) + "}"]
        lines += [r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
        for row in _others(report):
            cells = [_tex(versus_text(report, row, col, digits)) for col in report.cols]
            lines.append(" & ".join([_tex(report.label(row)), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
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
