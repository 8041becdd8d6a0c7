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

SEED_KEY = "seed"


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
