"""Finished runs as data: one place that reads run folders, for the sweep summary and for ``bdrun-report``.

A run folder is what one Hydra job leaves behind: ``.hydra/`` (config, overrides, group choices),
``metrics.json`` (written by the pipeline when the job finished) and ``status.json`` (written by the command
line for every job, finished or failed, with the failure's one-line error). A folder without ``status.json``
but with ``metrics.json`` predates status files and counts as completed; one with neither never finished
(killed, or still running).

Metrics are flattened to ``role.metric`` names: ``clean.cacc``, ``backdoored.asr``, ``purified.side_effect``,
``purified.auroc`` (detectors), ``delta.asr``, ``clean.balanced_accuracy``, ``backdoored.collapsed`` (1.0 when
the model collapsed, :mod:`bdrun.trust`). ``final.<metric>`` is the last model of the run (purified, else
backdoored, else clean): the number a defense table shows, with ``defense=none`` giving the backdoored model.

Nothing here imports torch: reading results must stay fast.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bdrun.errors import BdrunError
from bdrun.trust import COLLAPSED

METRICS_FILE = "metrics.json"
STATUS_FILE = "status.json"
ERROR_LOG = "error.log"
ROLES = ("clean", "backdoored", "purified", "delta")
# Summary columns, in order; a column is shown only when some job has it.
SUMMARY_METRICS = [
    "clean.cacc",
    "clean.asr",
    "backdoored.cacc",
    "backdoored.asr",
    "backdoored.side_effect",
    "purified.cacc",
    "purified.asr",
    "purified.side_effect",
    "purified.auroc",
    "purified.far_at_frr1",
    "purified.far_at_frr5",
    "purified.frr",
    "purified.latency_ratio",
]
# A delta compares two models: the collapse of either one makes it meaningless.
MEASURED_ROLES = {"delta": ("purified", "backdoored")}
# Metrics that are fractions and read best in percent; the others (latency ratios) are shown as they are.
PERCENT_METRICS = {
    "cacc",
    "asr",
    "side_effect",
    "auroc",
    "far_at_frr1",
    "far_at_frr5",
    "frr",
    "balanced_accuracy",
    "majority_rate",
    "top_prediction_share",
}


# -- writing: the command line records every job's outcome -----------------------------------------------------
def one_line(error: BaseException) -> str:
    """A failure as one line: a BdrunError's message as is, anything else prefixed with its type."""
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(error, BdrunError) else f"{type(error).__name__}: {message}".rstrip(": ")


def write_status(run_dir: Path, error: BaseException | None = None) -> None:
    """Record a job's outcome in its run folder; an unexpected error's traceback goes to ``error.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {"status": "completed"}
    if error is not None:
        status = {"status": "failed", "error": one_line(error)}
        if not isinstance(error, BdrunError):
            (run_dir / ERROR_LOG).write_text("".join(traceback.format_exception(error)))
    (run_dir / STATUS_FILE).write_text(json.dumps(status, indent=2))


# -- reading ------------------------------------------------------------------------------------------------
def flatten_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``metrics.json`` as ``role.metric`` numbers (stages and diagnostics left out), plus ``final.*``.

    Flags (``collapsed``) become 1.0 / 0.0, so that a mean over seeds is the share of seeds flagged."""
    flat: dict[str, float] = {}
    for role in ROLES:
        for name, value in report.get(role, {}).items():
            if isinstance(value, int | float):
                flat[f"{role}.{name}"] = float(value)
    last = next((role for role in ("purified", "backdoored", "clean") if role in report), None)
    if last is not None:
        flat.update({f"final.{k.split('.', 1)[1]}": v for k, v in flat.items() if k.startswith(f"{last}.")})
    return flat


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _text(value: Any) -> str | None:
    """A config value as the command line types it: ``false``, not Python's ``False`` (so ``--where
    attack.clnorm=false`` matches)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


@dataclasses.dataclass
class Job:
    """One run folder, read."""

    run_dir: Path
    num: int  # Hydra's job number within its sweep (0 for a single run): the order jobs were launched in
    overrides: dict[str, str]  # command-line overrides of this job, as typed (key -> value)
    choices: dict[str, str]  # config group -> chosen option (attack -> badnets), swept or default
    config: dict[str, Any]  # the composed config, resolved as the job saw it
    status: str  # completed | failed | unfinished
    error: str | None
    metrics: dict[str, float]

    def value(self, key: str) -> str | None:
        """A config key's value as text: a group's choice (``attack``), else the composed config
        (``attack.poison_rate``, ``seed``), else the override as typed (keys outside the saved config)."""
        if key in self.choices:
            return self.choices[key]
        found = _text(_lookup(self.config, key))
        return found if found is not None else self.overrides.get(key)

    def collapsed(self, metric: str) -> bool:
        """Whether a model that ``metric`` (``role.name``) measures collapsed (:mod:`bdrun.trust`), so that the
        number says nothing about a backdoor. Runs from before the flag existed read as not collapsed."""
        role = metric.split(".", 1)[0]
        return any(self.metrics.get(f"{r}.{COLLAPSED}", 0.0) > 0 for r in MEASURED_ROLES.get(role, (role,)))


def read_job(run_dir: Path) -> Job:
    hydra_dir = run_dir / ".hydra"
    overrides = {}
    for item in _yaml(hydra_dir / "overrides.yaml") or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    hydra_cfg = (_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {})
    choices = {k: str(v) for k, v in (_lookup(hydra_cfg, "runtime.choices") or {}).items() if "/" not in k}
    num = _lookup(hydra_cfg, "job.num")
    metrics_file, status_file = run_dir / METRICS_FILE, run_dir / STATUS_FILE
    metrics = flatten_metrics(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {}
    if status_file.is_file():
        status = json.loads(status_file.read_text())
        state, error = status.get("status", "unfinished"), status.get("error")
    else:
        state, error = ("completed" if metrics else "unfinished"), None
    return Job(
        run_dir=run_dir,
        num=int(num) if isinstance(num, int) else 0,
        overrides=overrides,
        choices=choices,
        config=_yaml(hydra_dir / "config.yaml") or {},
        status=state,
        error=error,
        metrics=metrics,
    )


def find_jobs(folders: Iterable[Path]) -> list[Job]:
    """Every run folder in ``folders`` (a run folder itself, a sweep folder, or any folder above them), in
    launch order: folders in the order given, then by sweep, then by job number."""
    jobs: list[Job] = []
    for folder in folders:
        if not folder.is_dir():
            raise BdrunError(f"{folder} is not a folder; pass run or multirun folders (outputs/multirun/<date>/<time>)")
        found = sorted({p.parent.parent for p in folder.rglob(".hydra/overrides.yaml")})
        if not found:
            raise BdrunError(f"no runs under {folder} (no .hydra/overrides.yaml); pass a run or multirun folder")
        jobs += sorted((read_job(run) for run in found), key=lambda j: (str(j.run_dir.parent), j.num))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs (every override key when there is one job), in the
    order they were given on the command line."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys and not k.startswith("hydra.")]
    if len(jobs) <= 1:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction in percent, without the sign (the tables say "in %" once); "—" for a number not measured."""
    return "—" if value is None else f"{100 * value:.{digits}f}"


def format_metric(name: str, value: float | None, digits: int = 2) -> str:
    if value is None or name.rsplit(".", 1)[-1] in PERCENT_METRICS:
        return percent(value, digits)
    return f"{value:.{digits}f}"
