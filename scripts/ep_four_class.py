"""Issue 14.1 at full size: EP on a 4-class task, one run per target label (not run on the shared CPU box).

Builds the 4-class task from the shared data (SST-2 negative / SST-2 positive / Stormfront hate / Ling-Spam
spam, texts cut to 16 words; 500 / 100 / 250 rows per class for train / dev / test), writes it under
``--out``, then runs the real CLI over every target label with the default EP budget:

    PYTHONPATH=. BDRUN_DATA_DIR=/work/shared/data python scripts/ep_four_class.py --out /tmp/four_class

which runs ``bdrun -m model=minilm dataset=sst2_glue dataset.location=<out>/data
dataset.num_labels=4 attack=ep attack.target_label=0,1,2,3 logger=none``. Each job's metrics.json has
backdoored.asr (all three non-target classes), backdoored.cacc (= clean.cacc: EP leaves trigger-free
predictions unchanged) and diagnostics.backdoored.attack.steps / best_step / stopped / heldout_history.
``--small`` uses 2 layers, 60 / 20 / 30 rows per class and max_length 32 (minutes on a free CPU).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchlib import launch_or_exit, pct, read_metrics

from tests.multiclass import write_four_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    shared = Path(os.environ.get("BDRUN_DATA_DIR", "/work/shared/data"))
    sizes = {"train": 60, "dev": 20, "test": 30} if args.small else {"train": 500, "dev": 100, "test": 250}
    data = write_four_class(args.out / "data", shared, sizes)
    overrides = [
        "dataset=sst2_glue",
        f"dataset.location={data}",
        "dataset.num_labels=4",
        "attack=ep",
        "attack.target_label=0,1,2,3",
        "logger=none",
        f"paths.output_dir={args.out / 'outputs'}",
        f"paths.cache_dir={args.out / 'cache'}",
    ]
    if args.small:
        overrides += ["model.num_layers=2", "model.max_length=32", "trainer.epochs=8", "optimizer.lr=1e-3"]
    launch_or_exit(["-m", *overrides], capture=False)  # bdrun's own output shows as it runs
    print("| target | clean CACC | EP CACC | EP ASR | EP steps (best) |\n|---|---|---|---|---|")
    for path in sorted((args.out / "outputs").rglob("metrics.json")):
        report = read_metrics(path.parent)
        attack = report["diagnostics"]["backdoored"]["attack"]
        target = path.parent.name.split("target_label=")[-1].split(",")[0]
        print(
            f"| {target} | {pct(report['clean']['cacc'], 1)} | {pct(report['backdoored']['cacc'], 1)} "
            f"| {pct(report['backdoored']['asr'], 1)} | {attack['steps']} ({attack['best_step']}) |"
        )


if __name__ == "__main__":
    main()
