"""Length bucketing against none: clean CACC, backdoored CACC and ASR over seeds, paired by seed, and job time.

Why: ``trainer.bucketing=true`` (batches of similar-length inputs, less padding) changes the data order, so
it changes the trained models; ``scripts/bench_train_throughput.py --compare bucketing`` shows what it saves
per sample, this script shows what it does to the results at the CPU preset's sizes, over several seeds.
``trainer.bucket_batches`` is the size of the shuffled mega-batch that is sorted by length (in batches): the
smaller it is, the more random each batch's neighbours and the more padding is left.

How: one real ``bdrun`` process per (side, seed), BadNets ``attack=badnets_cf`` at ``experiment=cpu_sizes``
(2,000 SST-2 training sentences, 1 epoch, batch 16, lr 1e-4, max length 64) with the clean reference
(``clean=true``), so each job trains a clean and a backdoored model and evaluates both on the full test set.
A side is a set of overrides (``--sides``, separated by ``;``; the first is the reference the others are
compared with). Within each seed the sides run in an order that rotates per seed, so load on a shared host
hits all alike. Each side's difference to the reference is the mean of the per-seed differences with Student's
t 95% interval (:mod:`bdrun.stats`): "not distinguishable" when the interval holds zero. All jobs share one
``BDRUN_CACHE_DIR``; sides and seeds have different cache keys, so nothing is reused within one invocation (the
per-job table says when a stage was reused, e.g. on a rerun, in which case job times do not measure training).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 BDRUN_CACHE_DIR=outputs/bench-cache-bucketing \\
        python scripts/bench_bucketing_seeds.py --seeds 42,1,2,3,4 \\
        --sides "trainer.bucketing=false;trainer.bucket_batches=8;trainer.bucket_batches=50" \\
        --out docs/results/bucketing_seeds.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchlib import REPO, launch_or_exit, mean_std, pct, read_metrics

from bdrun.report import stat
from bdrun.stats import paired_difference

METRICS = ("clean.cacc", "backdoored.cacc", "backdoored.asr")
SIDES = "trainer.bucketing=false;trainer.bucketing=true"


def run_job(side: str, seed: str, run_dir: Path, extra: list[str], env: dict[str, str]) -> dict:
    overrides = ["experiment=cpu_sizes", "attack=badnets_cf", "logger=none", *side.split(), f"seed={seed}", *extra]
    args = [*overrides, f"hydra.run.dir={run_dir}"]
    _, seconds = launch_or_exit(args, what=f"{side}, seed={seed}", cwd=REPO, env=env)
    report = read_metrics(run_dir)
    values = {m: report[m.split(".")[0]][m.split(".")[1]] for m in METRICS}
    reused = [role for role, stage in report.get("stages", {}).items() if stage.get("reused")]
    print(
        f"{side} seed={seed}: {seconds:.0f} s, "
        + ", ".join(f"{m} {pct(v)}%" for m, v in values.items())
        + (f" (reused: {', '.join(reused)})" if reused else ""),
        flush=True,
    )
    return {"side": side, "seed": seed, "seconds": seconds, "reused": reused, **values}


def tables(jobs: list[dict], sides: list[str], seeds: list[str]) -> list[str]:
    """Mean ± std per side, each side's paired difference to the first, and every job."""
    lines = [
        f"Mean ± sample std over {len(seeds)} seeds, percent; job time in seconds (one `bdrun` process: clean and "
        "backdoored training, both evaluations, start-up).",
        "",
        "| side | clean CACC | backdoored CACC | ASR | job time s |",
        "|---|---:|---:|---:|---:|",
    ]
    by_side = {side: {j["seed"]: j for j in jobs if j["side"] == side} for side in sides}
    for side in sides:
        rows = list(by_side[side].values())
        cells = [mean_std([j[m] for j in rows]) for m in METRICS]
        lines.append(f"| `{side}` | " + " | ".join(cells) + f" | {mean_std([j['seconds'] for j in rows], 1, 0)} |")
    reference = sides[0]
    lines += [
        "",
        f"Paired by seed against `{reference}`: mean difference in points [95% interval] and the verdict "
        "(ahead / behind only when the whole interval is on one side of zero); job time as the mean of the "
        "per-seed ratios.",
        "",
        "| side | Δ clean CACC | Δ backdoored CACC | Δ ASR | job time ratio |",
        "|---|---|---|---|---:|",
    ]
    for side in sides[1:]:
        cells = []
        for metric in METRICS:
            base = [by_side[reference][s][metric] for s in seeds]
            other = [by_side[side][s][metric] for s in seeds]
            diff = paired_difference(base, other)
            cells.append(f"{diff.text()} {diff.verdict()}")
        ratio = stat([by_side[side][s]["seconds"] / by_side[reference][s]["seconds"] for s in seeds])
        lines.append(f"| `{side}` | " + " | ".join(cells) + f" | {ratio.mean:.2f} |")
    lines += [
        "",
        "Per job (in run order):",
        "",
        "| seed | side | clean CACC | backdoored CACC | ASR | job time s | reused stages |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for j in jobs:
        lines.append(
            f"| {j['seed']} | `{j['side']}` | "
            + " | ".join(pct(j[m]) for m in METRICS)
            + f" | {j['seconds']:.0f} | {', '.join(j['reused']) or 'none'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1,2", help="comma-separated seeds")
    parser.add_argument("--sides", default=SIDES, help=f"';'-separated override sets, first = reference ({SIDES})")
    parser.add_argument("--out", type=Path)
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("BDRUN_CACHE_DIR", "outputs/bench-cache-bucketing")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    root = REPO / "outputs" / "runs" / "bench_bucketing" / time.strftime("%Y-%m-%d_%H-%M-%S")
    seeds = args.seeds.split(",")
    sides = [side.strip() for side in args.sides.split(";") if side.strip()]
    started = time.time()
    jobs = []
    for i, seed in enumerate(seeds):
        for k in range(len(sides)):
            side = sides[(i + k) % len(sides)]
            folder = "_".join(part.split(".")[-1].replace("=", "-") for part in side.split())
            jobs.append(run_job(side, seed, root / f"{folder}_seed{seed}", args.extra, env))

    sides_arg = f' --sides "{args.sides}"' if args.sides != SIDES else ""
    lines = [
        f"BadNets (`attack=badnets_cf`), `experiment=cpu_sizes logger=none`, seeds {', '.join(seeds)}; "
        f"{env['OMP_NUM_THREADS']} OMP thread(s); extra overrides: {' '.join(args.extra) or 'none'}. "
        f"Whole benchmark: {(time.time() - started) / 60:.1f} min.",
        "",
        "```bash",
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} MKL_NUM_THREADS={env['MKL_NUM_THREADS']} "
        f"BDRUN_CACHE_DIR={env['BDRUN_CACHE_DIR']} \\",
        f"    python scripts/bench_bucketing_seeds.py --seeds {args.seeds}{sides_arg} "
        "--out docs/results/bucketing_seeds.md" + (f" -- {' '.join(args.extra)}" if args.extra else ""),
        "```",
        "",
        *tables(jobs, sides, seeds),
    ]
    body = "\n".join(lines)
    print(body)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        title = "# Length bucketing against none: CACC / ASR over seeds\n\n"
        args.out.write_text(
            title + f"Generated by `scripts/bench_bucketing_seeds.py` (its docstring: why and how).\n\n{body}\n"
        )


if __name__ == "__main__":
    main()
