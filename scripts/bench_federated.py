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

Seeds: ``--collect`` takes several sweep folders (e.g. one sweep per seed range); each aggregator's cells are
the mean ± std over its seeds, ``(n=K)`` after its name or ``‡`` for one seed, the regime counts summed over
the seeds; ``†`` marks a CACC / ASR whose model bdrun flagged as collapsed in some seed (:mod:`bdrun.trust`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from benchlib import (
    REPO,
    SINGLE_SEED_MARK,
    invocation,
    launch_or_exit,
    marked,
    mean_std,
    publish,
    sweep_runs,
    trust_legend,
)

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


def collect(roots: list[Path]) -> dict[str, list[dict]]:
    """Aggregator -> its finished jobs' reports, one per seed, over every sweep folder given (seeds may come
    from separate sweeps: ``--collect SEED42_SWEEP SEEDS_1_2_SWEEP``)."""
    found: dict[str, dict[str | None, dict]] = {}
    for root in roots:
        for job, report in sweep_runs(root):
            found.setdefault(job.overrides["defense"], {}).setdefault(job.value("seed"), report)
    return {defense: list(by_seed.values()) for defense, by_seed in found.items()}


def spread(values: list[float | None]) -> str:
    """Percent with one decimal, mean ± std over seeds (the std left out for one); "—" where none has a value
    (detection precision of an aggregator that dropped nobody)."""
    present = [v for v in values if v is not None]
    return mean_std(present, digits=1) if present else "—"


def regime(federations: list[dict]) -> str:
    """``inside L2 / above on selected coordinates / malicious client-rounds`` summed over the seeds, or a dash
    without diagnostics."""
    counts = [regime_counts(fed.get("rounds", [])) for fed in federations]
    total = {key: sum(c[key] for c in counts) for key in ("malicious", "inside_l2", "outside_selected")}
    if not total["malicious"]:
        return "—"
    return f"{total['inside_l2']} / {total['outside_selected']} of {total['malicious']}"


def row(label: str, models: list[dict], federations: list[dict]) -> str:
    """One aggregator over its seeds: ‡ when one seed, † on CACC / ASR when a model collapsed in some seed
    (bdrun's flag); the cost columns are the seeds' means."""
    feds = [fed for fed in federations if fed]
    name = f"{label} {SINGLE_SEED_MARK}" if len(models) == 1 else f"{label} (n={len(models)})"
    costs = [fed["overhead"] for fed in feds if "overhead" in fed]
    clients = [fed["client_seconds"] for fed in feds if "client_seconds" in fed]
    rounds = [fed["round_seconds"] for fed in feds if "round_seconds" in fed]
    cells = [
        marked(spread([m["cacc"] for m in models]), *models),
        marked(spread([m.get("asr") for m in models]), *models),
        spread([fed.get("detection_precision") for fed in feds]),
        spread([fed.get("detection_recall") for fed in feds]),
        f"{statistics.mean(costs):.3f}" if costs else "—",
        f"{statistics.mean(clients):.0f} / {statistics.mean(rounds):.0f}" if clients else "—",
        regime(feds),
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def role_of(report: dict) -> str:
    """The federation a job's final model comes from: its aggregator's (purified), or FedAvg's for fedavg."""
    return "purified" if report["stages"]["purified"]["stage"] == "purify" else "backdoored"


def fedavg_runs(results: dict[str, list[dict]]) -> list[dict]:
    """One report per seed: every job of a seed holds that seed's clean (unless clean=false) and FedAvg
    federations, so any job of the seed gives them (the FedAvg federation's stage key names the seed)."""
    return list({r["stages"]["backdoored"]["key"]: r for reports in results.values() for r in reports}.values())


def table(results: dict[str, list[dict]], defenses: list[str]) -> list[str]:
    lines = [
        "| aggregator | CACC | ASR | det. precision | det. recall | round / client training | client s / round s "
        "| malicious inside L2 / outside selected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_seed = fedavg_runs(results)
    if per_seed and "clean" in per_seed[0]:  # absent from runs with clean=false
        clean = [r for r in per_seed if "clean" in r]
        lines.append(row("*clean federation* (FedAvg)", [r["clean"] for r in clean],
                         [r["federation"].get("clean") for r in clean]))  # fmt: skip
    backdoored_row = bool(per_seed) and "fedavg" not in results
    if backdoored_row:
        lines.append(row("fedavg (backdoored)", [r["backdoored"] for r in per_seed],
                         [r["federation"].get("backdoored") for r in per_seed]))  # fmt: skip
    for defense in defenses:
        reports = results.get(defense)
        if not reports:
            if not (defense == "fedavg" and backdoored_row):
                lines.append(f"| {defense} | n/a | n/a | | | | | |")
            continue
        label = "fedavg (backdoored)" if defense == "fedavg" else defense
        lines.append(row(label, [r["purified"] for r in reports], [r["federation"].get(role_of(r)) for r in reports]))
    return lines


def curves(results: dict[str, list[dict]], defenses: list[str]) -> list[str]:
    """Per round, the global model's ASR on the curve subset: the mean over seeds."""
    lines = ["Per-round ASR of the global model (curve test subset, mean over the seeds), %:", ""]
    shown = {defense: [(r, role_of(r)) for r in results.get(defense, [])] for defense in defenses}
    if "fedavg" not in results:
        shown = {"fedavg (backdoored)": [(r, "backdoored") for r in fedavg_runs(results)], **shown}
    for label, runs in shown.items():
        per_seed = [[r.get("asr") for r in report["federation"][role]["rounds"]] for report, role in runs]
        if per_seed:
            values = [spread(list(at_round)).split(" ±")[0] for at_round in zip(*per_seed, strict=False)]
            lines.append(f"- {label}: {' → '.join(values)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--defenses", default=",".join(AGGREGATORS), help="comma-separated aggregators")
    parser.add_argument(
        "--collect", type=Path, nargs="+", help="only tabulate the jobs finished under these sweep folders"
    )
    parser.add_argument("--plot", type=Path, help="write the regime plot (PNG) of one federation here")
    parser.add_argument("--plot-defense", default="fedavg", help="the job whose federation is drawn (default fedavg)")
    parser.add_argument("--plot-role", help="clean, backdoored or purified (default: backdoored)")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    roots = args.collect or [REPO / "outputs" / "multirun" / "bench_federated" / time.strftime("%Y-%m-%d_%H-%M-%S")]
    defenses = args.defenses.split(",")
    commands = []
    if not args.collect:
        command, seconds = multirun(defenses, roots[0], args.extra)
        commands.append(f"`{' '.join(command)}`  ({seconds / 60:.1f} min)")
    results = collect(roots)
    reports = [r for seeds in results.values() for r in seeds]
    memory = max((f.get("updates_mb", 0) for r in reports for f in r["federation"].values()), default=0)
    rows = table(results, defenses)
    lines = [
        "CACC / ASR in %, SST-2 test set; detection over all rounds; "
        f"client updates held per round: {memory:.0f} MB (one N x D float32 tensor).",
        "",
        *rows,
        "",
        *trust_legend(rows, single_seed=any(SINGLE_SEED_MARK in line for line in rows)),
        "",
        *curves(results, defenses),
        "",
        f"Generated by `{invocation()}`, which ran:",
        "",
        *[f"- {c}" for c in commands],
    ]
    if args.plot:
        drawn = results.get(args.plot_defense)
        if not drawn:
            sys.exit(f"--plot: no finished job with defense={args.plot_defense} under {' '.join(map(str, roots))}")
        write_regime_plot(drawn[0], args.plot, args.plot_role)
        at = lines.index("") + 1  # after the caption line
        lines[at:at] = [f"Regime plot of the defense={args.plot_defense} job (first seed): `{args.plot}`.", ""]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
