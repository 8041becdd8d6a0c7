"""The regime plot: per round, malicious against honest clients in what Krum sees (whole-update L2 score) and in
what Dim-Krum sees (its score on the top-rho gaps, and the strength on the selected coordinates).

A backdoor in the paper's regime sits inside the honest band in the first panel and above it in the others;
boosted or heavily relabelled attackers sit above it in all three, which is the regime Krum already handles.
Each value is divided by that round's honest median (log scale), so rounds with larger or smaller updates share
one axis. Reads a run's ``metrics.json`` (``federation.<role>.rounds``, :mod:`bdrun.federated.diagnostics`)::

    python -m bdrun.federated.plots outputs/runs/<date>/<time>/metrics.json --out regime.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bdrun.errors import BdrunError, check
from bdrun.federated.diagnostics import SCORES

TITLES = {
    "l2_score": "Krum score (whole-update L2)",
    "dim_score": "Dim-Krum score (top-rho gaps)",
    "selected_strength": "mean |update| on selected coordinates",
}


def regime_series(rounds: list[dict[str, Any]], score: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(round, value / honest median) points of the honest and of the malicious clients for one score."""
    honest: list[tuple[int, float]] = []
    malicious: list[tuple[int, float]] = []
    for record in rounds:
        bad = set(record["malicious"])
        values = dict(zip(record["clients"], record[score], strict=True))
        good = [v for c, v in values.items() if c not in bad]
        scale = statistics.median(good) if good and statistics.median(good) > 0 else 1.0
        for client, value in values.items():
            (malicious if client in bad else honest).append((record["round"], value / scale))
    return honest, malicious


def pick_role(report: dict[str, Any], role: str | None) -> str:
    """The federation to draw: ``role``, else the backdoored one (FedAvg; its malicious clients are the same in
    every role), else the first with malicious clients."""
    federations = report.get("federation") or {}
    check(bool(federations), "this metrics.json has no federation; the regime plot needs a federated run")
    if role is not None:
        check(role in federations, f"no federation '{role}' in this run; it has {', '.join(federations)}")
        return role
    if "backdoored" in federations:
        return "backdoored"
    return next((r for r, f in federations.items() if f.get("malicious_clients")), next(iter(federations)))


def write_regime_plot(report: dict[str, Any], path: Path, role: str | None = None) -> Path:
    """Draw the regime plot of ``report`` (a run's metrics.json) for ``role`` into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    role = pick_role(report, role)
    rounds = report["federation"][role]["rounds"]
    check(
        bool(rounds) and all("l2_score" in r for r in rounds),
        f"the {role} federation has no per-client diagnostics (cached before they were logged); rerun it "
        "with an empty cache folder",
    )
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4.2 * len(SCORES), 3.6), sharex=True)
    for ax, score in zip(axes, SCORES, strict=True):
        honest, malicious = regime_series(rounds, score)
        if honest:
            ax.scatter(*zip(*honest, strict=True), s=14, color="0.55", label="honest")
            span = {}
            for r, v in honest:
                low, high = span.get(r, (v, v))
                span[r] = (min(low, v), max(high, v))
            xs = sorted(span)
            ax.fill_between(xs, [span[x][0] for x in xs], [span[x][1] for x in xs], color="0.85", zorder=0)
        if malicious:
            ax.scatter(*zip(*malicious, strict=True), s=40, marker="x", color="tab:red", label="malicious")
        ax.set_yscale("log")
        ax.set_title(TITLES[score], fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("value / honest median")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{role} federation: malicious vs honest clients per round", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="a federated run's metrics.json")
    parser.add_argument("--role", help="clean, backdoored or purified (default: backdoored)")
    parser.add_argument("--out", type=Path, default=Path("regime.png"))
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.metrics.read_text())
        print(write_regime_plot(report, args.out, args.role))
    except (BdrunError, OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
