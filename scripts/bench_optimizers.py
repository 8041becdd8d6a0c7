"""The optimizer benchmark: clean CACC and training time (3 seeds), and BadNets ASR, per optimizer (SST-2, MiniLM).

Two Hydra multiruns with the real ``bdrun`` command:

1. clean training, ``seed`` × ``optimizer`` with the optimizer varying fastest, so the optimizers of one seed
   run back to back and their times can be compared within a round (the CPU this was written on is shared and
   wall times swing up to 2× between rounds);
2. BadNets (trigger ``cf``) for every optimizer at the first seed; its clean model is the cached one from 1.

Times are the ``train`` stage's own seconds (from the stage cache's ``meta.json``), and the table gives each
optimizer's median ratio to ``adamw`` in the same round.

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_optimizers.py --out docs/results/optimizers.md

``--train-size`` (default 1000) sub-samples the training set so that 20 trainings fit in an hour of 2 CPU
cores; the test set is the full SST-2 test set. Extra arguments after ``--`` go to every bdrun command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bench_defenses import publish

from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK

REPO = Path(__file__).resolve().parent.parent
OPTIMIZERS = ["adamw", "child_tuning_d", "child_tuning_f", "sam", "ga_sam"]
SEEDS = [1, 2, 3]


def multirun(args: list[str], sweep_dir: Path) -> list[str]:
    command = [sys.executable, "-c", "from bdrun.cli import main; main()", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bdrun failed ({' '.join(args)}):\n{result.stderr[-3000:]}")
    return ["bdrun", "-m", *args]


def jobs(sweep_dir: Path) -> list[tuple[dict[str, str], dict]]:
    """(overrides as a dict, metrics.json) of every finished job of a sweep."""
    found = []
    for metrics in sweep_dir.glob("*/metrics.json"):
        overrides = yaml.safe_load((metrics.parent / ".hydra" / "overrides.yaml").read_text())
        found.append((dict(o.split("=", 1) for o in overrides), json.loads(metrics.read_text())))
    return found


def train_seconds(cache_dir: Path, metrics: dict) -> float:
    key = metrics["stages"]["clean"]["key"]
    return json.loads((cache_dir / "train" / key / "meta.json").read_text())["seconds"]


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("BDRUN_CACHE_DIR", REPO / "outputs" / "cache")).resolve()
    root = REPO / "outputs" / "multirun" / "bench_optimizers" / time.strftime("%Y-%m-%d_%H-%M-%S")
    common = ["experiment=sst2_cpu", "logger=none", f"dataset.max_samples.train={args.train_size}", *args.extra]

    started = time.time()
    sweep = [f"seed={','.join(map(str, SEEDS))}", f"optimizer={','.join(OPTIMIZERS)}"]  # optimizer varies fastest
    clean_cmd = multirun([*common, "attack=none", "defense=none", *sweep], root / "clean")
    clean_minutes = (time.time() - started) / 60
    started = time.time()
    badnets_cmd = multirun(
        [*common, "attack=badnets", "attack.triggers=[cf]", "defense=none", f"seed={SEEDS[0]}",
         f"optimizer={','.join(OPTIMIZERS)}"],
        root / "badnets",
    )  # fmt: skip
    badnets_minutes = (time.time() - started) / 60

    cacc: dict[str, list[float]] = {o: [] for o in OPTIMIZERS}
    seconds: dict[tuple[str, str], float] = {}
    for overrides, metrics in jobs(root / "clean"):
        cacc[overrides["optimizer"]].append(metrics["clean"]["cacc"])
        seconds[overrides["optimizer"], overrides["seed"]] = train_seconds(cache_dir, metrics)
    badnets = {o["optimizer"]: m["backdoored"] for o, m in jobs(root / "badnets")}

    lines = [
        f"SST-2 (train sub-sample of {args.train_size}, full test set), MiniLM-L6, 1 epoch, batch 16, lr 1e-4,",
        "max_length 64; CACC / ASR in %. Time = the clean training stage's seconds; ratio = median over seeds of",
        "(seconds / adamw's seconds in the same seed round).",
        "",
        "| optimizer | clean CACC (mean ± sd, 3 seeds) | train time (s, per seed) | × adamw | "
        f"BadNets CACC (seed {SEEDS[0]}) | BadNets ASR (seed {SEEDS[0]}) |",
        "|---|---|---|---|---|---|",
    ]
    for name in OPTIMIZERS:
        times = [seconds.get((name, str(s))) for s in SEEDS]
        rounds = [(t, seconds.get(("adamw", str(s)))) for t, s in zip(times, SEEDS, strict=True)]
        ratios = [t / base for t, base in rounds if t and base]
        dirty = badnets.get(name)
        mark = f" {COLLAPSE_MARK}" if dirty and dirty.get("collapsed") else ""  # bdrun.trust
        cells = [
            name,
            mean_sd(cacc[name]) if cacc[name] else "n/a",
            " / ".join(f"{t:.0f}" if t else "—" for t in times),
            f"{statistics.median(ratios):.2f}" if ratios else "n/a",
            f"{100 * dirty['cacc']:.2f}{mark}" if dirty else "n/a",
            f"{100 * dirty['asr']:.2f}{mark}" if dirty else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if any(COLLAPSE_MARK in line for line in lines):
        lines += ["", f"{COLLAPSE_MARK} {COLLAPSE_LEGEND}"]
    lines += [
        "",
        "Generated by `python scripts/bench_optimizers.py "
        f"{' '.join(sys.argv[1:])}`, which ran ({clean_minutes:.0f} + {badnets_minutes:.0f} min):",
        "",
        f"- `{' '.join(clean_cmd)}`",
        f"- `{' '.join(badnets_cmd)}`",
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
