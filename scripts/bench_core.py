"""The core benchmark: clean, BadNets and AddSent on SST-2 with MiniLM, plus a cached rerun.

Runs the real ``bdrun`` command for each row, then reruns the first one to show that a finished experiment
is only read back from the cache. Prints a markdown table (and writes it with ``--out``).

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_core.py --out docs/results/core.md

Extra arguments after ``--`` go to every bdrun command (e.g. ``-- dataset.max_samples.train=500`` for a dry run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib import launch_or_exit, pct, read_metrics

ROWS = {
    "BadNets (cf)": ["attack=badnets", "attack.triggers=[cf]", "attack.poison_rate=0.1", "attack.target_label=1"],
    "AddSent": ["attack=addsent", "attack.poison_rate=0.1", "attack.target_label=1"],
}
PRESET = ["experiment=sst2_cpu", "logger=none"]


def run_bdrun(args: list[str]) -> tuple[dict, float, str]:
    """Run bdrun, return its metrics.json, wall time and console output."""
    result, seconds = launch_or_exit(args)
    run_dir = next(line.split("run dir: ", 1)[1] for line in result.stdout.splitlines() if "run dir: " in line)
    return read_metrics(Path(run_dir.strip())), seconds, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    lines = [
        "| attack | clean CACC | backdoored CACC | ΔCACC | ASR (clean model) | ASR (backdoored) | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    first_args: list[str] = []
    for name, overrides in ROWS.items():
        bdrun_args = [*PRESET, *overrides, *args.extra]
        first_args = first_args or bdrun_args
        metrics, seconds, _ = run_bdrun(bdrun_args)
        clean, dirty = metrics["clean"], metrics["backdoored"]
        lines.append(
            f"| {name} | {pct(clean['cacc'])} | {pct(dirty['cacc'])} | {100 * (dirty['cacc'] - clean['cacc']):+.2f} "
            f"| {pct(clean.get('asr'))} | {pct(dirty.get('asr'))} | {seconds:.0f} s |"
        )
        print(lines[-1], flush=True)

    _, rerun_seconds, log = run_bdrun(first_args)
    reused = log.count("reused ")
    lines.append("")
    lines.append(
        f"Rerun of the first command: {rerun_seconds:.1f} s wall (start-up included), {reused} stages reused, "
        f"{log.count('running ')} run."
    )
    lines.append("")
    lines.append(
        f"Command: `python scripts/bench_core.py {' '.join(args.extra)}` (bdrun {' '.join(PRESET)} + row overrides)"
    )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
