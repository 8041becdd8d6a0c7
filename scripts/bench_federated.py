"""The federated benchmark: FedAvg against the robust aggregators, BadNets (cf) clients, SST-2, MiniLM-L6.

ONE Hydra multirun over ``defense=<aggregators>``: the clean and the FedAvg-backdoored federations are trained
once (the stage cache), then one federation per aggregator. The defaults are the table sized for well under an
hour on a 2-core CPU (``conf/experiment/federated_sst2_cpu.yaml``): 10 clients (IID), 1 malicious (10%) poisoning
30% of its shard with BadNets (cf), 2,500 training samples (250 per client), 5 rounds of one local epoch,
inputs cut at 64 tokens, length-bucketed local batches, per-round curves on 400 test samples.

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_federated.py --out docs/results/federated.md

Extra arguments after ``--`` go to the bdrun command; a tiny smoke version (minutes, not meaningful numbers):

    python scripts/bench_federated.py -- model.num_layers=2 dataset.max_samples.train=400 \\
        dataset.max_samples.test=200 federated.rounds=2 federated.eval_samples=100

Columns: CACC / ASR of the final global model (whole test set), the aggregator's malicious-client detection
over all rounds (precision and recall of the clients it dropped; "—" where it drops none), and the round cost:
the whole round (local training, client embeddings, aggregation, bookkeeping, checkpoint; not the curve
evaluation) over the sum of its clients' local training, measured in the same run. The regime column counts
the malicious client-rounds that sat inside the honest clients' spread in Krum's L2 score and those above it in
their strength on the coordinates Dim-Krum selects (:mod:`bdrun.federated.diagnostics`): the paper's regime is
both counts near the total. ``--plot regime.png`` draws the backdoored (FedAvg) federation's diagnostics per
round (:mod:`bdrun.federated.plots`; ``--plot-role`` and ``--plot-defense`` pick another federation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchlib import REPO, invocation, launch_or_exit, publish, sweep_runs
from benchlib import pct as percent

from bdrun.federated.diagnostics import regime_counts
from bdrun.federated.plots import write_regime_plot

PRESET = ["experiment=federated_sst2_cpu", "logger=none", "hydra.sweep.subdir=${hydra.job.num}"]
AGGREGATORS = ["fedavg", "krum", "multi_krum", "median", "trimmed_mean", "dim_krum", "client_embedding"]


def multirun(defenses: list[str], sweep_dir: Path, extra: list[str]) -> tuple[list[str], float]:
    # Relative to the repository (the command's working directory), so the recorded command names no machine.
    where = f"hydra.sweep.dir={os.path.relpath(sweep_dir, REPO)}"
    args = ["-m", *PRESET, f"defense={','.join(defenses)}", where, *extra]
    _, seconds = launch_or_exit(args, cwd=REPO)
    return ["bdrun", *args], seconds


def collect(sweep_dir: Path) -> dict[str, dict]:
    return {job.overrides["defense"]: report for job, report in sweep_runs(sweep_dir)}


def pct(value: float | None) -> str:
    """This table's percent, with one decimal."""
    return percent(value, 1)


def regime(federation: dict) -> str:
    """``inside L2 / above on selected coordinates / malicious client-rounds``, or a dash without diagnostics."""
    counts = regime_counts(federation.get("rounds", []))
    if not counts["malicious"]:
        return "—"
    return f"{counts['inside_l2']} / {counts['outside_selected']} of {counts['malicious']}"


def row(label: str, model: dict, federation: dict | None) -> str:
    fed = federation or {}
    cost = f"{fed['overhead']:.3f}" if "overhead" in fed else "—"
    seconds = f"{fed['client_seconds']:.0f} / {fed['round_seconds']:.0f}" if "client_seconds" in fed else "—"
    cells = [
        pct(model["cacc"]),
        pct(model.get("asr")),
        pct(fed.get("detection_precision")),
        pct(fed.get("detection_recall")),
        cost,
        seconds,
        regime(fed),
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def table(results: dict[str, dict], defenses: list[str]) -> list[str]:
    lines = [
        "| aggregator | CACC | ASR | det. precision | det. recall | round / client training | client s / round s "
        "| malicious inside L2 / outside selected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    any_report = next(iter(results.values()), None)
    if any_report and "clean" in any_report:  # absent from runs with clean=false
        lines.append(row("*clean federation* (FedAvg)", any_report["clean"], any_report["federation"].get("clean")))
    backdoored_row = any_report is not None and "fedavg" not in results  # every job holds the FedAvg federation
    if backdoored_row:
        lines.append(row("fedavg (backdoored)", any_report["backdoored"], any_report["federation"].get("backdoored")))
    for defense in defenses:
        report = results.get(defense)
        if report is None and defense == "fedavg" and backdoored_row:
            continue
        if report is None:
            lines.append(f"| {defense} | n/a | n/a | | | | | |")
            continue
        role = "purified" if report["stages"]["purified"]["stage"] == "purify" else "backdoored"
        label = "fedavg (backdoored)" if defense == "fedavg" else defense
        lines.append(row(label, report["purified"], report["federation"].get(role)))
    return lines


def curves(results: dict[str, dict], defenses: list[str]) -> list[str]:
    lines = ["Per-round ASR of the global model (curve test subset), %:", ""]
    for defense in defenses:
        report = results.get(defense)
        if report is None:
            continue
        role = "purified" if report["stages"]["purified"]["stage"] == "purify" else "backdoored"
        values = [pct(r.get("asr")) for r in report["federation"][role]["rounds"]]
        lines.append(f"- {defense}: {' → '.join(values)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--defenses", default=",".join(AGGREGATORS), help="comma-separated aggregators")
    parser.add_argument("--collect", type=Path, help="only tabulate the jobs already finished under this folder")
    parser.add_argument("--plot", type=Path, help="write the regime plot (PNG) of one federation here")
    parser.add_argument("--plot-defense", default="fedavg", help="the job whose federation is drawn (default fedavg)")
    parser.add_argument("--plot-role", help="clean, backdoored or purified (default: backdoored)")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    root = args.collect or REPO / "outputs" / "multirun" / "bench_federated" / time.strftime("%Y-%m-%d_%H-%M-%S")
    defenses = args.defenses.split(",")
    commands = []
    if not args.collect:
        command, seconds = multirun(defenses, root, args.extra)
        commands.append(f"`{' '.join(command)}`  ({seconds / 60:.1f} min)")
    results = collect(root)
    memory = max((f.get("updates_mb", 0) for r in results.values() for f in r["federation"].values()), default=0)
    lines = [
        "CACC / ASR in %, SST-2 test set; detection over all rounds; "
        f"client updates held per round: {memory:.0f} MB (one N x D float32 tensor).",
        "",
        *table(results, defenses),
        "",
        *curves(results, defenses),
        "",
        f"Generated by `{invocation()}`, which ran:",
        "",
        *[f"- {c}" for c in commands],
    ]
    if args.plot:
        report = results.get(args.plot_defense)
        if report is None:
            sys.exit(f"--plot: no finished job with defense={args.plot_defense} under {root}")
        write_regime_plot(report, args.plot, args.plot_role)
        at = lines.index("") + 1  # after the caption line
        lines[at:at] = [f"Regime plot of the defense={args.plot_defense} job: `{args.plot}`.", ""]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
