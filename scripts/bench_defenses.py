"""The defense benchmark: attacks (BadNets, AddSent, EP, syntactic) × purification defenses on SST-2 with MiniLM.

The whole table is ONE Hydra multirun over attacks × defenses, and every attack is poisoned once: the stage
cache gives every defense of an attack the same backdoored model. The table of CACC / ASR (in %) is
``bdrun-report``'s (``docs/reporting.md`` has the equivalent two commands); this script adds what is specific to
this benchmark (E-PUR's top suspects, unfinished cells) and writes it between the ``bench`` markers of ``--out``
(text around them is kept).

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_defenses.py --out docs/results/defenses.md

``--preset`` picks the setting (default ``sst2_cpu``: the full 6,920 training sentences, about an hour on two idle
cores; ``cpu_sizes``: 2,000 sentences, one epoch, length-bucketed batches, about 30 minutes on one core).
Extra arguments after ``--`` go to the bdrun command (e.g. ``-- dataset.max_samples.train=500``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchlib import REPO, failure, invocation, launch, publish, read_metrics

from bdrun.report import build_report, to_markdown
from bdrun.results import find_jobs

# The setting (an experiment preset; --preset) and the defenders' clean set: the defaults' clean_size=0.05 (5%).
PRESET = "sst2_cpu"
# attack choice: table label (syntactic: Hidden Killer on the released SST-2 paraphrases, docs/attacks.md)
ATTACKS = {"badnets_cf": "BadNets (`cf`)", "addsent": "AddSent", "ep": "EP (`cf`)", "syntactic": "Syntactic"}
DEFENSES = [
    "none",
    "fine_tuning",
    "fine_pruning",
    "reinit",
    "fine_mixing",
    "fine_mixing_e_pur",
    "fine_purifying",
    "meft",
    "meft_training",
]


def multirun(
    preset: str, attacks: list[str], defenses: list[str], sweep_dir: Path, extra: list[str]
) -> tuple[list[str], float]:
    """One bdrun multirun over attacks × defenses; returns the command and its wall time. Failed jobs are listed
    by the sweep summary and marked n/a in the table."""
    sweep = [f"attack={','.join(attacks)}", f"defense={','.join(defenses)}"]
    # Relative to the repository (the command's working directory), so the recorded command names no machine.
    where = f"hydra.sweep.dir={os.path.relpath(sweep_dir, REPO)}"
    args = ["-m", f"experiment={preset}", "logger=none", *sweep, where, *extra]
    result, seconds = launch(args, cwd=REPO)
    if result.returncode != 0:
        print(failure(result, " ".join(args)), file=sys.stderr)
    return ["bdrun", *args], seconds


def collect(sweep_dir: Path) -> dict[str, dict[str, dict]]:
    """metrics.json of every finished job of the sweep, by attack and then defense (for the E-PUR suspects)."""
    found: dict[str, dict[str, dict]] = {}
    for job in find_jobs([sweep_dir]):
        if job.status == "completed":
            found.setdefault(job.value("attack"), {})[job.value("defense")] = read_metrics(job.run_dir)
    return found


def table(sweep_dir: Path, attacks: list[str], defenses: list[str]) -> list[str]:
    """The table, by ``bdrun-report`` (the same call as its command line in the README)."""
    labels = {**ATTACKS, "none": "none (backdoored)", "fine_mixing_e_pur": "fine_mixing + e_pur"}
    report = build_report(
        find_jobs([sweep_dir]),
        ["defense"],
        ["attack"],
        ["final.cacc", "final.asr"],
        clean_row="*clean model*",
        labels=labels,
        order=[*attacks, *defenses],
    )
    return to_markdown(report, digits=1).splitlines()


def e_pur_suspects(results: dict[str, dict[str, dict] | None]) -> list[str]:
    lines = []
    for attack, jobs in results.items():
        report = (jobs or {}).get("fine_mixing_e_pur")
        if report:
            suspects = report["diagnostics"]["purified"]["defense"]["e_pur"]["top_suspects"][:5]
            shown = ", ".join(f"`{s['token']}` ({s['score']:.3g}, freq {s['clean_freq']})" for s in suspects)
            lines.append(f"- {ATTACKS[attack]}: {shown}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset of " + ",".join(ATTACKS))
    parser.add_argument("--defenses", default=",".join(DEFENSES), help="comma-separated subset of the defenses")
    parser.add_argument("--preset", default=PRESET, help="the experiment preset that sets the sizes (default sst2_cpu)")
    parser.add_argument("--collect", type=Path, help="only tabulate the jobs already finished under this folder")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    root = args.collect or REPO / "outputs" / "multirun" / "bench_defenses" / time.strftime("%Y-%m-%d_%H-%M-%S")
    attacks, defenses = args.attacks.split(","), args.defenses.split(",")
    commands = []
    if not args.collect:
        command, seconds = multirun(args.preset, attacks, defenses, root, args.extra)
        commands.append(f"`{' '.join(command)}`  ({seconds / 60:.0f} min)")
    found = collect(root)
    results = {attack: found.get(attack, {}) for attack in attacks}
    notes = [
        f"- {ATTACKS[a]}: {len(results[a])} of {len(defenses)} jobs finished."
        for a in attacks
        if len(results[a]) < len(defenses)
    ]

    setting = f"MiniLM-L6 (`experiment={args.preset}`), clean set = 5% of training"
    lines = [f"CACC / ASR in %, SST-2 test set, {setting}.", ""]
    lines += table(root, attacks, defenses)
    if suspects := e_pur_suspects(results):
        lines += ["", "E-PUR top suspects (score, clean-set frequency):", *suspects]
    if notes:
        lines += ["", *notes]
    lines += ["", f"Generated by `{invocation()}`, which ran:", ""]
    lines += [f"- {c}" for c in commands]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
