"""Peak memory of one federated round against the number of clients, with LoRA and with full fine-tuning.

Each measurement is a fresh process that builds one clean federation of ONE round (the ``train`` stage of
``federated=iid``, no attack) on a tiny model: MiniLM-L6 cut to 2 layers, 32 tokens, 4 SST-2 rows per client,
batch 4, no curves. Columns: D (trainable parameters = entries of one client update), the round's update
tensor (N x D float32), and the process's resident memory: its peak during the stage (Linux ``VmHWM``, reset
just before the stage through ``/proc/self/clear_refs``) and that peak minus the resident memory before the
stage (model, tokenizer and data already loaded). The update tensor is what grows with N; the rest is one
model, its optimizer state and the training loop, whatever N is.

    OMP_NUM_THREADS=1 python scripts/bench_federated_memory.py --out docs/results/federated.md

``--clients 10,20,50 --tunings lora,full`` are the defaults. The table goes between ``<!-- memory:start -->``
and ``<!-- memory:end -->`` of ``--out`` (printed without it); ``--plot PNG`` draws the same rows as a figure
(what the round adds, and the update tensor, against the number of clients, one line per tuning).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKERS = ("<!-- memory:start -->", "<!-- memory:end -->")


def overrides(clients: int, tuning: str, cache: str) -> list[str]:
    return [
        "federated=iid",
        f"federated.clients={clients}",
        "federated.malicious=0",
        "federated.rounds=1",
        "federated.eval_every=0",
        "model=minilm",
        "model.num_layers=2",
        "model.max_length=32",
        f"model.tuning={tuning}",
        f"dataset.max_samples={{train:{4 * clients},dev:32,test:32}}",
        "trainer.batch_size=4",
        "attack=none",
        "defense=none",
        "logger=none",
        f"paths.cache_dir={cache}",
    ]


def resident_kb(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process in kB (ru_maxrss when /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_one(clients: int, tuning: str) -> dict[str, float]:
    """Build one round's federation in this process and return its sizes in MB."""
    from hydra import compose, initialize_config_dir

    from bdrun.cli import CONF_DIR
    from bdrun.data import load_splits
    from bdrun.federated.memory import trainable_count
    from bdrun.pipeline import make_stages, parse_experiment

    with tempfile.TemporaryDirectory(prefix="bdrun-memory-") as cache:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides(clients, tuning, cache))
        exp = parse_experiment(cfg)
        splits = load_splits(exp.dataset, exp.data_dir)
        stages = make_stages(exp, splits)  # loads the model and runs the memory check
        trainable = trainable_count(stages.pretrained())
        with contextlib.suppress(OSError):  # reset VmHWM to the current resident size (Linux)
            Path("/proc/self/clear_refs").write_text("5")
        before = resident_kb("VmRSS")
        started = time.perf_counter()
        artifact = stages.train_clean()
        seconds = time.perf_counter() - started
        peak = resident_kb("VmHWM")
        fed = artifact.meta()["federation"]
    return {
        "clients": clients,
        "tuning": tuning,
        "trainable": trainable,
        "updates_mb": fed["updates_mb"],
        "peak_mb": peak / 1024,
        "round_mb": (peak - before) / 1024,
        "seconds": seconds,
    }


def table(rows: list[dict[str, float]]) -> list[str]:
    lines = [
        "| tuning | clients | D (trainable) | updates (N x D x 4 B) | peak RSS of the round | peak - before | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tuning']} | {r['clients']} | {r['trainable']:,} | {r['updates_mb']:.1f} MB | "
            f"{r['peak_mb']:.0f} MB | {r['round_mb']:.0f} MB | {r['seconds']:.0f} |"
        )
    return lines


def write_plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for tuning in dict.fromkeys(r["tuning"] for r in rows):
        mine = [r for r in rows if r["tuning"] == tuning]
        clients = [r["clients"] for r in mine]
        line = ax.plot(clients, [r["round_mb"] for r in mine], marker="o", label=f"{tuning}: peak - before")[0]
        ax.plot(clients, [r["updates_mb"] for r in mine], linestyle="--", color=line.get_color(),
                label=f"{tuning}: updates N x D x 4 B")  # fmt: skip
    ax.set_xlabel("clients per round")
    ax.set_ylabel("MB")
    ax.set_title("Memory a federated round adds (MiniLM-L6 cut to 2 layers)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,20,50")
    parser.add_argument("--tunings", default="lora,full")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="also draw the rows as a PNG figure")
    parser.add_argument("--one", nargs=2, metavar=("CLIENTS", "TUNING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(int(args.one[0]), args.one[1])))
        return
    # Only here, past the measured child's branch: the child's resident memory holds what bdrun imports, no more.
    from benchlib import REPO, invocation, publish

    rows = []
    for tuning in args.tunings.split(","):
        for clients in map(int, args.clients.split(",")):
            command = [sys.executable, __file__, "--one", str(clients), tuning]
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ})
            if result.returncode != 0:
                sys.exit(f"measuring {clients} clients with {tuning} failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    figure = [f"Figure: `{args.plot}`.", ""] if args.plot else []
    publish([*table(rows), "", *figure, f"Generated by `{invocation()}`."], args.out, MARKERS)
    if args.plot:
        write_plot(rows, args.plot)


if __name__ == "__main__":
    main()
