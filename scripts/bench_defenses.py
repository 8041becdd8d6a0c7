"""The defense benchmark: attacks (BadNets, AddSent, EP) × purification defenses on SST-2 with MiniLM.

The whole table is ONE Hydra multirun over attacks × defenses, and every attack is poisoned once: the stage
cache gives every defense of an attack the same backdoored model. Each job's ``metrics.json`` is collected into
a markdown table of CACC / ASR (in %), written between the ``bench`` markers of ``--out`` (text around them is
kept).

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_defenses.py --out docs/results/defenses.md

Extra arguments after ``--`` go to the bdrun command (e.g. ``-- dataset.max_samples.train=500``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PRESET = ["experiment=sst2_cpu", "logger=none"]  # clean set: the defenses' default clean_size=0.05 (5%)
ATTACKS = {"badnets_cf": "BadNets (cf)", "addsent": "AddSent", "ep": "EP (cf)"}  # attack choice: table label
DEFENSES = [
    "none",
    "fine_tuning",
    "fine_pruning",
    "reinit",
    "fine_mixing",
    "fine_mixing_e_pur",
    "fine_purifying",
    "meft",
]
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def multirun(attacks: list[str], defenses: list[str], sweep_dir: Path, extra: list[str]) -> tuple[list[str], float]:
    """One bdrun multirun over attacks × defenses; returns the command and its wall time."""
    sweep = [f"attack={','.join(attacks)}", f"defense={','.join(defenses)}"]
    # Relative to the repository (the command's working directory), so the recorded command names no machine.
    args = ["-m", *PRESET, *sweep, f"hydra.sweep.dir={os.path.relpath(sweep_dir, REPO)}", *extra]
    started = time.time()
    command = [sys.executable, "-c", "from bdrun.cli import main; main()", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bdrun failed ({' '.join(args)}):\n{result.stderr[-3000:]}")
    return ["bdrun", *args], time.time() - started


def collect(sweep_dir: Path) -> dict[str, dict[str, dict]]:
    """metrics.json of every finished job of the sweep, by attack and then defense override."""
    found: dict[str, dict[str, dict]] = {}
    for metrics in sweep_dir.glob("*/metrics.json"):
        overrides = yaml.safe_load((metrics.parent / ".hydra" / "overrides.yaml").read_text())
        choice = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("attack", "defense"))
        found.setdefault(choice["attack"], {})[choice["defense"]] = json.loads(metrics.read_text())
    return found


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def cell(report: dict | None) -> list[str]:
    if report is None:
        return ["n/a", "n/a"]
    model = report.get("purified", report.get("backdoored", report["clean"]))
    return [pct(model["cacc"]), pct(model.get("asr"))]


def table(results: dict[str, dict[str, dict] | None], defenses: list[str]) -> list[str]:
    names = [ATTACKS[a] for a in results]
    lines = [
        "| defense | " + " | ".join(f"{n} CACC | {n} ASR" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    clean_row = []
    for jobs in results.values():
        report = next(iter(jobs.values()), None) if jobs else None
        clean_row += [pct(report["clean"]["cacc"]), pct(report["clean"].get("asr"))] if report else ["n/a", "n/a"]
    lines.append("| *clean model* | " + " | ".join(clean_row) + " |")
    for defense in defenses:
        row = []
        for jobs in results.values():
            row += cell(jobs.get(defense)) if jobs else ["n/a", "n/a"]
        label = "none (backdoored)" if defense == "none" else defense.replace("_e_pur", " + e_pur")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return lines


def e_pur_suspects(results: dict[str, dict[str, dict] | None]) -> list[str]:
    lines = []
    for attack, jobs in results.items():
        report = (jobs or {}).get("fine_mixing_e_pur")
        if report:
            suspects = report["diagnostics"]["purified"]["defense"]["e_pur"]["top_suspects"][:5]
            shown = ", ".join(f"`{s['token']}` ({s['score']:.3g}, freq {s['clean_freq']})" for s in suspects)
            lines.append(f"- {ATTACKS[attack]}: {shown}")
    return lines


def write(out: Path, body: str) -> None:
    text = out.read_text() if out.exists() else f"# Defenses benchmark\n\n{MARKERS[0]}\n{MARKERS[1]}\n"
    if MARKERS[0] not in text:
        text += f"\n{MARKERS[0]}\n{MARKERS[1]}\n"
    head, rest = text.split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{MARKERS[0]}\n{body}\n{MARKERS[1]}{tail}")


def publish(lines: list[str], out: Path | None) -> None:
    """Print the generated markdown and, with ``--out``, put it between the markers of that file."""
    body = "\n".join(lines)
    print(body)
    if out:
        write(out, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset of " + ",".join(ATTACKS))
    parser.add_argument("--defenses", default=",".join(DEFENSES), help="comma-separated subset of the defenses")
    parser.add_argument("--collect", type=Path, help="only tabulate the jobs already finished under this folder")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()

    root = args.collect or REPO / "outputs" / "multirun" / "bench_defenses" / time.strftime("%Y-%m-%d_%H-%M-%S")
    attacks, defenses = args.attacks.split(","), args.defenses.split(",")
    commands = []
    if not args.collect:
        command, seconds = multirun(attacks, defenses, root, args.extra)
        commands.append(f"`{' '.join(command)}`  ({seconds / 60:.0f} min)")
    found = collect(root)
    results = {attack: found.get(attack, {}) for attack in attacks}
    notes = [
        f"- {ATTACKS[a]}: {len(results[a])} of {len(defenses)} jobs finished."
        for a in attacks
        if len(results[a]) < len(defenses)
    ]

    lines = ["CACC / ASR in %, SST-2 test set, MiniLM-L6 (`experiment=sst2_cpu`), clean set = 5% of training.", ""]
    lines += table(results, defenses)
    if suspects := e_pur_suspects(results):
        lines += ["", "E-PUR top suspects (score, clean-set frequency):", *suspects]
    if notes:
        lines += ["", *notes]
    lines += ["", f"Generated by `python scripts/bench_defenses.py {' '.join(sys.argv[1:])}`, which ran:", ""]
    lines += [f"- {c}" for c in commands]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
