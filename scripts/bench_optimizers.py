"""The optimizer benchmark: clean CACC and training time (3 seeds), and BadNets ASR, per optimizer (SST-2, MiniLM).

Two Hydra multiruns with the real ``bdrun`` command:

1. clean training, ``seed`` × ``optimizer`` with the optimizer varying fastest, so the optimizers of one seed
   run back to back and their times can be compared within a round (the CPU this was written on is shared and
   wall times swing up to 2× between rounds);
2. BadNets (trigger ``cf``) for every optimizer at the first seed; its clean model is the cached one from 1.

Times are the ``train`` stage's own seconds (from the stage cache's ``meta.json``), and the table gives each
optimizer's median ratio to ``adamw`` in the same round.

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_optimizers.py --out docs/results/optimizers.md

``--train-size`` (default 2000) sub-samples the training set so that 20 trainings fit in an hour of one CPU
core (48 min measured, 2026-12-07; at 1,000 rows Child-Tuning-F's and SAM's backdoored models collapsed to the
target class); the test set is the full SST-2 test set. Extra arguments after ``--`` go to every bdrun command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchlib import (
    REPO,
    SINGLE_SEED_MARK,
    invocation,
    launch_or_exit,
    marked,
    mean_std,
    pct,
    publish,
    sweep_runs,
    trust_legend,
)

OPTIMIZERS = ["adamw", "child_tuning_d", "child_tuning_f", "sam", "ga_sam"]
SEEDS = [1, 2, 3]


def multirun(args: list[str], sweep_dir: Path, run: bool) -> list[str]:
    """Launch one multirun into ``sweep_dir`` (unless only collecting); the command as the docs show it."""
    if run:
        launch_or_exit(["-m", *args, f"hydra.sweep.dir={sweep_dir}"], what=" ".join(args), cwd=REPO)
    return ["bdrun", "-m", *args]


def train_seconds(cache_dir: Path, metrics: dict) -> float:
    key = metrics["stages"]["clean"]["key"]
    return json.loads((cache_dir / "train" / key / "meta.json").read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--collect", type=Path, help="only tabulate the runs already finished under this folder")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("BDRUN_CACHE_DIR", REPO / "outputs" / "cache")).resolve()
    root = args.collect or REPO / "outputs" / "multirun" / "bench_optimizers" / time.strftime("%Y-%m-%d_%H-%M-%S")
    run = args.collect is None
    common = ["experiment=sst2_cpu", "logger=none", f"dataset.max_samples.train={args.train_size}", *args.extra]

    started = time.time()
    sweep = [f"seed={','.join(map(str, SEEDS))}", f"optimizer={','.join(OPTIMIZERS)}"]  # optimizer varies fastest
    clean_cmd = multirun([*common, "attack=none", "defense=none", *sweep], root / "clean", run)
    clean_minutes = (time.time() - started) / 60
    started = time.time()
    badnets_cmd = multirun(
        [*common, "attack=badnets", "attack.triggers=[cf]", "defense=none", f"seed={SEEDS[0]}",
         f"optimizer={','.join(OPTIMIZERS)}"],
        root / "badnets",
        run,
    )  # fmt: skip
    badnets_minutes = (time.time() - started) / 60

    cacc: dict[str, list[float]] = {o: [] for o in OPTIMIZERS}
    clean: dict[str, list[dict]] = {o: [] for o in OPTIMIZERS}
    seconds: dict[tuple[str, str], float] = {}
    for job, metrics in sweep_runs(root / "clean"):
        cacc[job.overrides["optimizer"]].append(metrics["clean"]["cacc"])
        clean[job.overrides["optimizer"]].append(metrics["clean"])
        seconds[job.overrides["optimizer"], job.overrides["seed"]] = train_seconds(cache_dir, metrics)
    badnets = {job.overrides["optimizer"]: m["backdoored"] for job, m in sweep_runs(root / "badnets")}

    lines = [
        f"SST-2 (train sub-sample of {args.train_size}, full test set), MiniLM-L6, 1 epoch, batch 16, lr 1e-4,",
        "max_length 64; CACC / ASR in %. Time = the clean training stage's seconds; ratio = median over seeds of",
        "(seconds / adamw's seconds in the same seed round).",
        "",
        "| optimizer | clean CACC (mean ± sd, 3 seeds) | train time (s, per seed) | × adamw | "
        f"BadNets CACC (seed {SEEDS[0]}) {SINGLE_SEED_MARK} | BadNets ASR (seed {SEEDS[0]}) {SINGLE_SEED_MARK} |",
        "|---|---|---|---|---|---|",
    ]
    for name in OPTIMIZERS:
        times = [seconds.get((name, str(s))) for s in SEEDS]
        rounds = [(t, seconds.get(("adamw", str(s)))) for t, s in zip(times, SEEDS, strict=True)]
        ratios = [t / base for t, base in rounds if t and base]
        dirty = badnets.get(name)
        cells = [
            name,
            marked(mean_std(cacc[name]), *clean[name]),
            " / ".join(f"{t:.0f}" if t else "—" for t in times),
            f"{statistics.median(ratios):.2f}" if ratios else "n/a",
            marked(pct(dirty["cacc"]), dirty) if dirty else "n/a",
            marked(pct(dirty["asr"]), dirty) if dirty else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *trust_legend(lines, single_seed=True)]
    lines += [
        "",
        f"Generated by `{invocation()}`, which ran"
        + (f" ({clean_minutes:.0f} + {badnets_minutes:.0f} min):" if run else ":"),
        "",
        f"- `{' '.join(clean_cmd)}`",
        f"- `{' '.join(badnets_cmd)}`",
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
