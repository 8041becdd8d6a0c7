"""The README's attack table: every seed attack against the same clean model on SST-2 (MiniLM-L6, CPU), with
bdrun's trust marks, plus a rerun that shows a finished experiment is only read back from the cache.

Each row is one real ``bdrun experiment=sst2_cpu logger=none <row overrides> seed=S`` per seed, run in its own
folder under ``--root`` (two at a time with ``--jobs 2``; the clean model is trained once, the other jobs wait on
its stage lock). The table is rebuilt from those folders (``--collect`` rebuilds it without running anything):
CACC of the clean and the backdoored model, ASR of both (the clean model's ASR is the trigger's effect without a
backdoor), the side effect (clean test predictions that changed). A cell whose model bdrun flagged as collapsed
carries ``†``; a row measured on one seed carries ``‡`` (:mod:`bdrun.trust`), so the table says which of its
numbers can be read as a backdoor.

    BDRUN_CACHE_DIR=outputs/bench-cache BDRUN_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \\
        python scripts/bench_attacks.py --jobs 2 --out docs/results/core.md --readme README.md

Extra arguments after ``--`` go to every bdrun command (e.g. ``-- dataset.max_samples.train=200
model.num_layers=2`` for a dry run).
"""

from __future__ import annotations

import argparse
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import (
    SINGLE_SEED_MARK,
    invocation,
    launch_or_exit,
    marked,
    mean_std,
    publish,
    read_metrics,
    trust_legend,
)

PRESET = ["experiment=sst2_cpu", "logger=none"]
# Row label (as the README shows it) -> its overrides. Every row shares the preset's clean model.
ROWS: dict[str, list[str]] = {
    "BadNets (trigger `cf`)": ["attack=badnets_cf"],
    'AddSent ("I watch this 3D movie")': ["attack=addsent"],
    "EP, task data (`attack=ep`)": ["attack=ep"],
    "EP, data-free (`attack=ep_data_free`, 1,000 Ling-Spam samples of 250 words)": ["attack=ep_data_free"],
    "surgery, budget 1e-4 (`attack=surgery`: the paper's Dyn-Δ, pruning inside one run)": ["attack=surgery"],
    "surgery, `attack=surgery_contrast` (ours: gradient selection by contrast)": ["attack=surgery_contrast"],
    "surgery, `attack.method=gradient` (paper's magnitude selection, selected up front)": [
        "attack=surgery",
        "attack.method=gradient",
    ],
    "syntactic, Hidden Killer (`attack=syntactic`: the authors' SST-2 paraphrases)": ["attack=syntactic"],
    "RIPPLe (`attack=ripple`: triggers `cf mn bb tq mb`, λ = 0.1, no embedding surgery)": ["attack=ripple"],
    "LWP (`attack=lwp`: every layer's loss, two-word trigger combinations)": ["attack=lwp"],
}
README_MARKERS = ("<!-- attacks:start -->", "<!-- attacks:end -->")


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:48]


def run_dir(root: Path, label: str, seed: int) -> Path:
    return root / slug(label) / f"seed{seed}"


def run_one(root: Path, label: str, seed: int, extra: list[str]) -> None:
    """One row's bdrun for one seed; a finished folder is not run again (a killed benchmark resumes)."""
    folder = run_dir(root, label, seed)
    if (folder / "metrics.json").exists():
        return
    args = [*PRESET, *ROWS[label], f"seed={seed}", *extra, f"hydra.run.dir={folder}"]
    _, seconds = launch_or_exit(args, what=label)
    print(f"done: {label}, seed {seed} ({seconds:.0f} s)", flush=True)


def cell(models: list[dict[str, Any]], metric: str) -> str:
    """Mean ± std over seeds of one metric, in %, marked when a model behind it collapsed."""
    return marked(mean_std([model[metric] for model in models]), *models)


def table(root: Path, seeds: list[int]) -> list[str]:
    lines = [
        "| attack | clean CACC | backdoored CACC | ΔCACC | ASR of the clean model | ASR | side effect |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in ROWS:
        found = [run_dir(root, label, s) / "metrics.json" for s in seeds]
        reports = [read_metrics(path.parent) for path in found if path.exists()]
        if not reports:
            continue
        clean = [r["clean"] for r in reports]
        dirty = [r["backdoored"] for r in reports]
        delta = [d["cacc"] - c["cacc"] for c, d in zip(clean, dirty, strict=True)]
        name = label + (f" {SINGLE_SEED_MARK}" if len(reports) == 1 else f" (n={len(reports)})")
        cells = [
            name,
            cell(clean, "cacc"),
            cell(dirty, "cacc"),
            mean_std(delta),
            cell(clean, "asr"),
            cell(dirty, "asr"),
            mean_std([d["side_effect"] for d in dirty]) + "%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_attacks"), help="one folder per row/seed")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds (default 42, the README's)")
    parser.add_argument("--jobs", type=int, default=1, help="bdrun commands at a time")
    parser.add_argument("--rows", help="comma-separated row numbers (1-based) to run; default all")
    parser.add_argument("--collect", action="store_true", help="only tabulate the finished folders under --root")
    parser.add_argument("--out", type=Path, help="results file (written between its bench markers)")
    parser.add_argument("--readme", type=Path, help="also write the table between the README's attacks markers")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()
    root = args.root.resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = list(ROWS)
    if args.rows:
        labels = [labels[int(i) - 1] for i in args.rows.split(",")]

    rerun = ""
    if not args.collect:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: run_one(root, *job, args.extra), [(lb, s) for lb in labels for s in seeds]))
        # The first row again, in a fresh folder: every stage must be read back from the cache.
        again = root / "rerun"
        result, seconds = launch_or_exit(
            [*PRESET, *ROWS[labels[0]], f"seed={seeds[0]}", *args.extra, f"hydra.run.dir={again}"]
        )
        # bdrun logs one "reused <stage>" or "running <stage>" line per stage (its result table says "reused" too).
        log = (result.stdout + result.stderr).splitlines()
        reused, ran = (sum(line.startswith(word) for line in log) for word in ("reused ", "running "))
        rerun = (
            f"Rerun of the first command in a fresh folder: {seconds:.1f} s wall (start-up included), "
            f"{reused} stages reused, {ran} run."
        )

    lines = table(root, seeds)
    lines += ["", *trust_legend(lines, single_seed=len(seeds) == 1)]
    lines += ["", f"Generated by `{invocation()}`; each row is `bdrun {' '.join(PRESET)} <row overrides> seed=S`."]
    if rerun:
        lines += ["", rerun]
    publish(lines, args.out)
    if args.readme:
        publish(lines, args.readme, README_MARKERS)


if __name__ == "__main__":
    main()
