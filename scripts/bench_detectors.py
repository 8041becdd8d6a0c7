"""Online detectors on SST-2 with MiniLM: DAN against STRIP and RAP, for BadNets, AddSent and EP.

One Hydra multirun of the real ``bdrun`` command per attack over ``defense=dan,strip,rap``; the backdoored
models come from the stage cache (set ``BDRUN_CACHE_DIR``), so only the detectors are fitted and scored.
Prints a markdown table (and writes it with ``--out``, after every attack).

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_detectors.py --out docs/results/detectors.md

Extra arguments after ``--`` go to every bdrun command (e.g. ``-- defense.test_subset=400`` to score a seeded
subset of the test set). An attack whose config is not in this checkout (``conf/attack/<name>.yaml``) is
listed as not run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import REPO, launch_or_exit, pct, sweep_runs

ATTACKS = {  # attack choice: (row name, overrides)
    "badnets": ("BadNets (cf)", ["attack.triggers=[cf]"]),
    "addsent": ("AddSent", []),
    "ep": ("EP (cf)", ["attack.trigger=cf"]),
    "syntactic": ("Syntactic (Hidden Killer)", []),  # no inserted word: the case word-perturbation detectors miss
}
PRESET = "sst2_cpu"  # the setting, an experiment preset (--preset)
DEFENSES = "dan,dan_cls,strip,rap"  # dan_cls: DAN with [CLS] pooling (conf/defense/dan_cls.yaml)
# A second sweep per attack: DAN with layer weights fitted on clean dev (defense.layers=auto), both poolings.
# (++: Hydra composes a multirun's primary config without the swept group, where the key does not exist yet)
VARIANTS = ["defense=dan,dan_cls", "++defense.layers=auto"]
PREAMBLE = """# Online backdoor detectors on SST-2 (MiniLM-L6, `experiment={preset}`)

Clean test inputs are the negatives, the triggered non-target test inputs the positives (the ASR inputs). As in
the DAN and RAP papers, a detector screens only the inputs the model predicts as the protected label (the
attack's target, `defense.protect_label`); any other prediction cannot be a backdoor success and passes. AUROC
(scikit-learn's `roc_auc_score`), FAR and test FRR are therefore computed on the screened inputs ("screened"
column: clean / triggered). Every threshold comes from held-out clean data, never from the test set: the
held-out 20% of the clean dev set (DAN: all of its scores, as the official code; STRIP and RAP: the screened
ones). FAR@FRR x%: share of screened triggered inputs not flagged at the threshold that rejects x% of those
held-out scores. Test FRR, CACC and ASR (after rejection, over all inputs) use the threshold for a 5% FRR; a
rejected clean input counts as an error, a rejected triggered input as defended. ms/input: plain prediction vs
the detector's scoring of the same inputs (all of them, screened or not) in the same run; cost × = their ratio.
`dan` is DAN with the paper's default mean token pooling, `dan_cls` the same with [CLS] pooling;
`layers=auto` weights the layers by how well each separates the clean dev classes (fitted on clean data only).
"""
HEADER = [
    "| attack | detector | screened | AUROC | FAR@FRR1% | FAR@FRR5% | test FRR | CACC | ASR (before → after) "
    "| ms/input (plain / detector) | cost × |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def multirun(overrides: list[str], sweep_dir: Path) -> None:
    launch_or_exit(["-m", *overrides, f"hydra.sweep.dir={sweep_dir}"], what=" ".join(overrides))


def rows(name: str, sweep_dir: Path) -> list[str]:
    """One table row per job of a finished multirun, in sweep order."""
    lines = []
    for job, report in sweep_runs(sweep_dir):
        knobs = [
            f"{key.split('.', 1)[1]}={value}"
            for key, value in job.overrides.items()
            if key.startswith("defense.") and "test_subset" not in key
        ]
        defense = " ".join([job.overrides["defense"], *knobs])
        det, before = report["purified"], report["backdoored"]
        lines.append(
            f"| {name} | {defense} | {det['screened_clean']:.0f} / {det.get('screened_triggered', 0):.0f} "
            f"| {pct(det.get('auroc'))} | {pct(det.get('far_at_frr1'))} "
            f"| {pct(det.get('far_at_frr5'))} | {pct(det['frr'])} | {pct(det['cacc'])} "
            f"| {pct(before.get('asr'))} → {pct(det.get('asr'))} "
            f"| {det['plain_ms_per_input']:.1f} / {det['detector_ms_per_input']:.1f} | {det['latency_ratio']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--attacks", nargs="*", default=list(ATTACKS), help="attack choices (default: badnets addsent ep syntactic)"
    )
    parser.add_argument("--defenses", default=DEFENSES, help=f"the defense sweep (default: {DEFENSES})")
    parser.add_argument("--preset", default=PRESET, help=f"the setting, an experiment preset (default: {PRESET})")
    parser.add_argument(
        "--no-variants", dest="variants", action="store_false", help=f"skip the second sweep ({' '.join(VARIANTS)})"
    )
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    sweep_root = REPO / "outputs" / "bench_detectors" / time.strftime("%Y-%m-%d_%H-%M-%S")
    lines, notes = list(HEADER), []
    for choice in args.attacks:
        name, overrides = ATTACKS[choice]
        if not (REPO / "conf" / "attack" / f"{choice}.yaml").is_file():
            notes.append(f"{name}: not run, `attack={choice}` is not in this checkout.")
            continue
        started = time.time()
        sweeps = [[f"defense={args.defenses}"], *([VARIANTS] if args.variants else [])]
        for number, sweep in enumerate(sweeps):
            sweep_dir = sweep_root / f"{choice}_{number}"
            multirun(
                [f"experiment={args.preset}", "logger=none", f"attack={choice}", *overrides, *sweep, *args.extra],
                sweep_dir,
            )
            lines.extend(rows(name, sweep_dir))
        notes.append(f"{name}: {time.time() - started:.0f} s wall for the multiruns (cached models reused).")
        print("\n".join(lines[-6:]), flush=True)
        write(args, lines, notes)
    print("\n".join(lines))
    write(args, lines, notes)


def write(args: argparse.Namespace, lines: list[str], notes: list[str]) -> None:
    extra = " ".join(args.extra)
    preset = "" if args.preset == PRESET else f" --preset {args.preset}"
    command = (
        f"BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_detectors.py{preset} --out docs/results/detectors.md"
    )
    then = f", then {' '.join(VARIANTS)}" if args.variants else ""
    text = [
        PREAMBLE.format(preset=args.preset),
        *lines,
        "",
        f"Command: `{command}{' -- ' + extra if extra else ''}` "
        f"(bdrun -m experiment={args.preset} logger=none attack=<row> defense={args.defenses}{then}).",
        "",
        *(f"- {note}" for note in notes),
    ]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
