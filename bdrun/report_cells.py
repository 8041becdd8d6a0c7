"""The table of ``bdrun-report`` as data: completed jobs grouped into cells, each metric reduced to mean ± std
over seeds, with each cell's seed count and collapse count (see :mod:`bdrun.report` for the rules).

Apart from the writers (:mod:`bdrun.report_render`) so that a script can build the numbers and render them its
own way, and from the command line (:mod:`bdrun.report`), which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import statistics

from bdrun.errors import BdrunError
from bdrun.results import Job, swept_keys
from bdrun.stats import PairedDifference, paired_difference

SEED_KEY = "seed"
MISSING = "—"  # a row / column key that this run's config lacks (another attack's knob)


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
    # --versus: the reference row, and per other cell the last metric's difference to it, paired by seed
    reference: tuple[str, ...] | None = None
    versus: dict[tuple[tuple[str, ...], tuple[str, ...]], PairedDifference] = dataclasses.field(default_factory=dict)

    def label(self, values: tuple[str, ...]) -> str:
        return ", ".join(self.labels.get(v, v) for v in values) if values else ""


def _values(job: Job, keys: list[str]) -> tuple[str, ...]:
    """The job's values of ``keys``; ``—`` for a key its config lacks (RIPPLe has no ``attack.clnorm``), so that
    rows of different attacks share one table (:func:`_check_keys` has ruled out a key no run has)."""
    return tuple(job.value(k) or MISSING for k in keys)


def _check_keys(jobs: list[Job], keys: list[str]) -> None:
    """A row / column key that no run has is a typo, not another attack's knob."""
    for key in keys:
        if all(j.value(key) is None for j in jobs):
            raise BdrunError(
                f"no config key '{key}' in any run (e.g. {jobs[0].run_dir}); choose --rows/--cols among their keys"
            )


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
    versus: dict[str, str] | None = None,
) -> Report:
    """Group completed jobs into cells and reduce each metric to mean ± std over seeds.

    ``clean_row``: the label of an extra first row with the clean model of each column (the metrics with their
    model replaced by ``clean``), one job per seed, since every job of a column shares that clean model.
    ``versus``: the row keys' values of one reference row (``{"defense": "none"}``); every other cell then also
    gets the last metric's difference to the reference cell of its column, paired by seed (:mod:`bdrun.stats`).
    """
    selected = [j for j in jobs if all(j.value(k) == v for k, v in (where or {}).items())]
    if not selected:
        raise BdrunError(f"no runs match --where {where}; check the keys and values against the runs' configs")
    _check_keys(selected, [*row_keys, *col_keys])
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
    report = Report(row_keys, col_keys, metrics, rows, cols, cells, labels or {}, skipped, seeds, collapsed)
    if versus:
        report.reference = _reference_row(rows, row_keys, versus)
        report.versus = _paired_to_reference(groups, report.reference, metrics[-1])
    return report


def _reference_row(rows: list[tuple[str, ...]], row_keys: list[str], versus: dict[str, str]) -> tuple[str, ...]:
    """The one row whose values match ``versus`` on the keys it names (each a row key)."""
    unknown = [k for k in versus if k not in row_keys]
    if unknown:
        keys = ", ".join(row_keys)
        raise BdrunError(f"--versus names {', '.join(unknown)}, not a row key; use keys of --rows ({keys})")
    matches = [r for r in rows if all(r[row_keys.index(k)] == v for k, v in versus.items())]
    if len(matches) != 1:
        found = "; ".join(", ".join(r) for r in rows)
        raise BdrunError(
            f"--versus {versus} matches {len(matches)} rows, not one; name the row keys that tell it apart "
            f"(rows: {found})"
        )
    return matches[0]


def _paired_to_reference(
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Job]], reference: tuple[str, ...], metric: str
) -> dict[tuple[tuple[str, ...], tuple[str, ...]], PairedDifference]:
    """``metric`` of each cell minus that of its column's reference cell, over the seeds both have (pairing by
    seed removes what the two runs of a seed share: data order, poisoned rows, initial head). Cells that share no
    seed with the reference are left out (rendered n/a)."""
    out = {}
    for (row, col), members in groups.items():
        if row == reference or (reference, col) not in groups:
            continue
        mine = {j.value(SEED_KEY): j.metrics[metric] for j in members if metric in j.metrics}
        theirs = {j.value(SEED_KEY): j.metrics[metric] for j in groups[(reference, col)] if metric in j.metrics}
        shared = sorted(set(mine) & set(theirs), key=str)
        if shared:
            out[(row, col)] = paired_difference([theirs[s] for s in shared], [mine[s] for s in shared])
    return out
