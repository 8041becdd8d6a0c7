"""What one run shows: the console table, the flat metrics a tracker logs, and the run's tracker tags.

Apart from :mod:`bdrun.pipeline` so that the run reads as stages only; ``bdrun-report`` (:mod:`bdrun.report`)
makes the tables across runs.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from rich.table import Table

from bdrun.experiment import Experiment
from bdrun.results import percent
from bdrun.trust import COLLAPSE_MARK, COLLAPSED

DETECTOR_COLUMNS = {"auroc": "AUROC", "far_at_frr1": "FAR@FRR1%", "far_at_frr5": "FAR@FRR5%", "frr": "FRR"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The report's numbers and strings as one level of ``a/b/c`` keys, the shape trackers log."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float | str | bool):
            flat[f"{prefix}{key}"] = value
    return flat


def results_table(report: dict[str, Any], exp: Experiment) -> Table:
    """The console table of one run: a row per model with CACC, the trust columns, ASR, side effect and where its
    stage came from; a caption for a detector's or an aggregator's own metrics and for collapsed models."""
    title = f"attack={exp.attack.config.name} defense={exp.defense.config.name} dataset={exp.dataset.name}"
    table = Table(title=title)
    # bal. acc: balanced accuracy; majority: the majority-class rate; predicted: % of clean test inputs per class
    columns = ("model", "CACC", "bal. acc", "majority", "predicted", "ASR", "side effect", "stage")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "predicted", "stage") else "right")

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{percent(value)}%"

    for role in ("clean", "backdoored", "purified"):
        if role in report:
            origin = report["stages"][role]
            status = f"{origin['stage']} {'reused' if origin['reused'] else 'built'}"
            metrics = report[role]
            mark = f" {COLLAPSE_MARK}" if metrics.get(COLLAPSED) else ""
            shares = "/".join(f"{100 * v:.0f}" for v in metrics.get("prediction_shares", {}).values()) or "—"
            table.add_row(
                role,
                pct(metrics["cacc"]) + mark,
                pct(metrics.get("balanced_accuracy")),
                pct(metrics.get("majority_rate")),
                shares,
                pct(metrics.get("asr")) + (mark if "asr" in metrics else ""),
                pct(metrics.get("side_effect")),
                status,
            )
    if "delta" in report:
        delta = report["delta"]
        cacc, asr = (f"{100 * delta[m]:+.2f}" if m in delta else "—" for m in ("cacc", "asr"))
        table.add_row("Δ purified", cacc, "", "", "", asr, "", "")
    detector = report.get("purified", {})
    if "latency_ratio" in detector:  # an online detector: CACC / ASR above are after rejection
        parts = [f"{label} {pct(detector[m])}" for m, label in DETECTOR_COLUMNS.items() if m in detector]
        table.caption = (
            f"detector (CACC/ASR after rejection): {', '.join(parts)}, cost ×{detector['latency_ratio']:.2f}"
        )
    if "detection_recall" in detector:  # a federated aggregator: the dropped clients as a detector
        keys = [m for m in ("precision", "recall") if f"detection_{m}" in detector]
        found = [f"{m} {pct(detector[f'detection_{m}'])}" for m in keys]
        table.caption = f"malicious-client detection over all rounds: {', '.join(found)}"
    notes = [table.caption] if table.caption else []
    if any(report[role].get(COLLAPSED) for role in ("clean", "backdoored", "purified") if role in report):
        notes.append(f"{COLLAPSE_MARK} collapsed model (bdrun/trust.py): CACC of a constant, ASR of no backdoor")
    if not report.get("clean_reference", True):
        notes.append("clean=false: no clean reference model, so no clean row and no side effect")
    table.caption = "\n".join(notes) or None
    return table


def config_tags(cfg: DictConfig) -> list[str]:
    """W&B tags that let a project's runs be filtered by the choice of each config group."""
    tags = [
        f"attack={cfg.attack.name}",
        f"defense={cfg.defense.name}",
        f"dataset={cfg.dataset.name}",
        f"model={cfg.model.name}",
    ]
    federated = cfg.get("federated") or {}
    if federated.get("name", "none") != "none":
        tags.append(f"federated={federated['name']}")
    return tags
