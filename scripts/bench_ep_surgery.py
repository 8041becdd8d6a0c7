"""EP, data-free EP and surgery against BadNets on SST-2 with the full MiniLM-L6 (``experiment=sst2_cpu``).

Runs one ``bdrun`` command per attack (sharing the stage cache, so the clean model is trained once and
BadNets' poisoned model is reused when it is already there), then writes a markdown table: CACC of the clean
and the backdoored model, ASR, the instance-wise side effect (clean test predictions that changed), the number
of parameter entries that differ from the clean model (counted here from the two safetensors files), the
attack stage's own build time and the command's wall time. Cells carry bdrun's trust marks (``†`` where the
run's ``collapsed`` flag is set, ``‡`` one seed); the table goes between the results file's bench markers.

    BDRUN_CACHE_DIR=outputs/bench-cache BDRUN_DATA_DIR=../shared/data \\
        python scripts/bench_ep_surgery.py --out docs/results/attacks_ep_surgery.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

from benchlib import SINGLE_SEED_MARK, invocation, launch_or_exit, marked, pct, publish, read_metrics, trust_legend
from safetensors.torch import load_file

COMMON = ["experiment=sst2_cpu", "logger=none"]
RUNS = {
    "ep (task data)": ["attack=ep", "attack.trigger=cf"],
    "ep (data-free, Ling-Spam)": ["attack=ep", "attack.trigger=cf", "attack.data=free"],
    "surgery dynamic (budget 1e-4)": [
        "attack=surgery",
        "attack.method=dynamic",
        "attack.selection=magnitude",
        "attack.sparse_lr=1e-3",
        "attack.budget=1e-4",
    ],
    "surgery gradient (budget 1e-4)": [
        "attack=surgery",
        "attack.method=gradient",
        "attack.selection=magnitude",
        "attack.sparse_lr=1e-3",
        "attack.budget=1e-4",
    ],
    "surgery gradient, contrast, sparse_lr 1e-3 (budget 1e-4)": [
        "attack=surgery",
        "attack.method=gradient",
        "attack.selection=contrast",
        "attack.sparse_lr=1e-3",
        "attack.budget=1e-4",
    ],
    "surgery gradient, contrast (budget 1e-4; attack=surgery_contrast)": [
        "attack=surgery",
        "attack.method=gradient",
        "attack.selection=contrast",
        "attack.sparse_lr=1e-2",
        "attack.budget=1e-4",
    ],
    "badnets (full poisoned fine-tuning)": ["attack=badnets", "attack.triggers=[cf]"],
}


def entries_changed(cache: Path, clean_key: str, backdoored_key: str, stage: str) -> int:
    clean = load_file(str(cache / "train" / clean_key / "model.safetensors"))
    edited = load_file(str(cache / stage / backdoored_key / "model.safetensors"))
    return sum(int((clean[name] != edited[name]).sum()) for name in clean)


def run(name: str, overrides: list[str], out_dir: Path, cache: Path) -> dict:
    run_dir = out_dir / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    args = [*COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    print(f"$ bdrun {shlex.join(args)}", flush=True)
    env = {**os.environ, "BDRUN_CACHE_DIR": str(cache)}
    _, wall = launch_or_exit(args, what=name, env=env, capture=False)  # bdrun's own output shows as it runs
    report = read_metrics(run_dir)
    stages = report["stages"]
    backdoored = stages["backdoored"]
    meta = json.loads((cache / backdoored["stage"] / backdoored["key"] / "meta.json").read_text())
    return {
        "name": name,
        "args": args,
        "report": report,
        "wall": wall,
        "stage_seconds": meta["seconds"],
        "stage_reused": backdoored["reused"],
        "changed": entries_changed(cache, stages["clean"]["key"], backdoored["key"], backdoored["stage"]),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| attack | CACC clean | CACC backdoored | ASR | side effect | entries changed | attack stage (s) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row["report"]
        clean, bd = r["clean"], r["backdoored"]
        stage = f"{row['stage_seconds']:.0f}" + (" (cached)" if row["stage_reused"] else "")
        lines.append(
            f"| {row['name']} {SINGLE_SEED_MARK} | {marked(pct(clean['cacc']), clean)} | "
            f"{marked(pct(bd['cacc']), bd)} | {marked(pct(bd['asr']), bd)} | "
            f"{pct(bd['side_effect'])}% | {row['changed']:,} | {stage} | {row['wall']:.0f} |"
        )
    return "\n".join([*lines, "", *trust_legend(lines, single_seed=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/attacks_ep_surgery.md"))
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench_ep_surgery"))
    parser.add_argument("--only", nargs="*", help="run only the attacks whose name starts with one of these")
    args = parser.parse_args()
    cache = Path(os.environ.get("BDRUN_CACHE_DIR", "outputs/cache")).resolve()
    chosen = {k: v for k, v in RUNS.items() if not args.only or any(k.startswith(p) for p in args.only)}
    rows = [run(name, overrides, args.runs_dir.resolve(), cache) for name, overrides in chosen.items()]
    body = table(rows)
    commands = [f"bdrun {shlex.join(row['args'][:-1])}" for row in rows]
    shown = os.environ.get("BDRUN_CACHE_DIR", "outputs/cache")  # as given, not resolved: no machine's folders
    # Between the results file's bench markers: the hand-written reading around them stays.
    publish(
        [body, "", f"Generated by `{invocation()}`, which ran (cache {shown}):", "", "```", *commands, "```"], args.out
    )


if __name__ == "__main__":
    main()
