"""The federation: R rounds of sample clients -> local training -> aggregate -> global step, checkpointed per round.

Local training is :func:`local_update`, a pure function of (global weights, shard, seed): it loads the global
weights into a scratch model, trains it with the one training loop (:func:`bdrun.training.train`, the run's
optimizer group and trainer knobs) and returns the parameter change as one flat vector. Clients therefore run
one after another in one process here, and a later backend could run the same function on a pool of workers
(Flower's simulation engine, say) without changing what a round computes. The round's updates are one
``(N, D)`` tensor, not N model copies; its size is reported per round (``updates_mb``).

After each round the global weights, the aggregator's state (Dim-Krum's memory) and the round log are written
to ``<work>/federation/round-NNNN/`` (atomically; older rounds are removed). A killed run resumes after the last
finished round and ends with the same weights and metrics as an uninterrupted one, because every random choice
is a function of (seed, round, client) (:mod:`bdrun.federated.setting`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bdrun.attacks import ATTACKS, Attack, DataPoisoningAttack
from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.evaluation import evaluate_model
from bdrun.federated.aggregators import Aggregator, RoundUpdates
from bdrun.federated.embeddings import client_embedding
from bdrun.federated.setting import (
    FederatedConfig,
    client_seed,
    malicious_clients,
    partition,
    sampled_clients,
)
from bdrun.training import train

CHECKPOINTS = "federation"


@dataclasses.dataclass
class Federation:
    """One federated training run: the setting, the server's aggregator and (for malicious clients) the attack."""

    config: FederatedConfig
    aggregator: Aggregator
    attack: DataPoisoningAttack | None = None  # poisons the malicious clients' shards; None: all clients honest
    eval_attack: Attack | None = None  # the trigger for per-round ASR; None: the curves hold CACC only


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a client can change: frozen ones never move, so they stay out of the updates (with a
    parameter-efficient ``model.tuning`` only the tuned parameters travel)."""
    return [p for p in model.parameters() if p.requires_grad]


def vector_of(model: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters, flattened into one float32 CPU vector (in ``model.parameters()`` order)."""
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in trainable(model)])


@torch.no_grad()
def load_vector(model: torch.nn.Module, vector: torch.Tensor) -> None:
    """Copy ``vector`` into the trainable parameters (a copy: the vector never aliases the model's storage)."""
    offset = 0
    for param in trainable(model):
        count = param.numel()
        param.copy_(vector[offset : offset + count].view_as(param))
        offset += count


def local_update(
    scratch: torch.nn.Module,
    global_weights: torch.Tensor,
    shard: TextDataset,
    seed: int,
    context: StageContext,
    epochs: int,
    desc: str = "client",
) -> torch.Tensor:
    """One client's round: (global weights, shard, seed) -> its flat parameter update.

    ``scratch`` only lends its architecture: its parameters are overwritten with ``global_weights`` first, and a
    fresh optimizer is built (clients keep no optimizer state between rounds, as in FedAvg).
    """
    load_vector(scratch, global_weights)
    train(
        scratch,
        context.tokenizer,
        shard,
        context.optimizer,
        dataclasses.replace(context.trainer, epochs=epochs),
        max_length=context.model_config.max_length,
        device=context.device,
        seed=seed,
        checkpoint_dir=None,  # the resume unit is the round: a client's training is redone, never half-reused
        desc=desc,
    )
    return vector_of(scratch) - global_weights


def detection(dropped: list[int], malicious: list[int]) -> dict[str, float]:
    """Precision and recall of the dropped clients as a malicious-client detector (absent when undefined)."""
    hits = len(set(dropped) & set(malicious))
    out: dict[str, float] = {}
    if dropped:
        out["precision"] = hits / len(dropped)
    if malicious:
        out["recall"] = hits / len(malicious)
    return out


def save_round(folder: Path, done: int, weights: torch.Tensor, state: dict[str, Any]) -> None:
    """Atomically write the checkpoint after ``done`` finished rounds and drop older ones."""
    final = folder / f"round-{done:04d}"
    partial = folder / f".round-{done:04d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({"global": weights.contiguous()}, str(partial / "global.safetensors"))
    (partial / "state.json").write_text(json.dumps(state))
    partial.rename(final)
    for old in folder.glob("round-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def load_round(folder: Path) -> tuple[int, torch.Tensor, dict[str, Any]] | None:
    found = sorted(folder.glob("round-*")) if folder.is_dir() else []
    if not found:
        return None
    latest = found[-1]
    state = json.loads((latest / "state.json").read_text())
    return int(state["done"]), load_file(str(latest / "global.safetensors"))["global"], state


def client_shards(splits: Splits, fed: Federation, seed: int) -> tuple[list[TextDataset], list[int]]:
    """Each client's training shard (the malicious ones poisoned by the attack) and the malicious client ids."""
    cfg = fed.config
    rows = partition(splits.train.labels, cfg.clients, cfg.partition, cfg.alpha, seed)
    bad = malicious_clients(cfg.clients, cfg.malicious_count, seed) if fed.attack is not None else []
    shards = [splits.train.subset(r) for r in rows]
    for client in bad:
        shards[client] = fed.attack.poison(shards[client])
    return shards, bad


def run_federation(
    model: torch.nn.Module, splits: Splits, fed: Federation, context: StageContext, desc: str
) -> dict[str, Any]:
    """Train ``model`` (the initial global model, changed in place) federatedly; return the stage's diagnostics."""
    cfg, seed = fed.config, context.seed
    shards, bad = client_shards(splits, fed, seed)
    probe = None
    if fed.aggregator.needs_embeddings:
        probe = splits.dev.sample(fed.aggregator.config.probe_size, seed)
    test = splits.test.sample(cfg.eval_samples, seed) if cfg.eval_samples else splits.test
    eval_attack = fed.eval_attack or ATTACKS.build({"name": "none"})
    folder = context.work_dir / CHECKPOINTS

    weights, start, log = vector_of(model), 0, []
    resumed = load_round(folder)
    if resumed is not None:
        start, weights, state = resumed
        fed.aggregator.load_state(state["aggregator"])
        log = state["log"]

    for round_no in range(start, cfg.rounds):
        started = time.perf_counter()
        chosen = sampled_clients(cfg.clients, cfg.per_round, seed, round_no)
        updates = torch.empty(len(chosen), weights.numel())
        embeddings = []
        client_seconds = embedding_seconds = 0.0
        for row, client in enumerate(chosen):
            tick = time.perf_counter()
            updates[row] = local_update(
                model,
                weights,
                shards[client],
                client_seed(seed, round_no, client),
                context,
                cfg.local_epochs,
                desc=f"{desc} round {round_no + 1}/{cfg.rounds} client {client}",
            )
            if client in bad:
                updates[row] *= cfg.malicious_scale
            client_seconds += time.perf_counter() - tick
            if probe is not None:  # the client's trained model is still loaded in `model`
                tick = time.perf_counter()
                embeddings.append(client_embedding(model, probe, context, fed.aggregator.config.features))
                embedding_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        result = fed.aggregator.aggregate(
            RoundUpdates(
                updates,
                chosen,
                torch.tensor([len(shards[c]) for c in chosen], dtype=torch.float64),
                round=round_no,
                seed=seed,
                embeddings=torch.stack(embeddings) if embeddings else None,
            )
        )
        aggregate_seconds = time.perf_counter() - tick
        weights = weights + cfg.server_lr * result.update
        malicious_now = [c for c in chosen if c in bad]
        record: dict[str, Any] = {
            "round": round_no + 1,
            "clients": chosen,
            "malicious": malicious_now,
            "dropped": result.dropped,
            **detection(result.dropped, malicious_now),
            "updates_mb": updates.numel() * updates.element_size() / 2**20,
            "client_seconds": client_seconds,
            "embedding_seconds": embedding_seconds,
            "aggregate_seconds": aggregate_seconds,
        }
        del updates
        eval_seconds = 0.0
        if cfg.eval_every and ((round_no + 1) % cfg.eval_every == 0 or round_no + 1 == cfg.rounds):
            tick = time.perf_counter()
            load_vector(model, weights)
            metrics, _ = evaluate_model(
                model,
                context.tokenizer,
                test,
                eval_attack,
                seed=seed,
                max_length=context.model_config.max_length,
                batch_size=context.trainer.eval_batch_size,
                device=context.device,
                precision=context.trainer.precision,
            )
            record.update({k: metrics[k] for k in ("cacc", "asr") if k in metrics})
            eval_seconds = time.perf_counter() - tick
        record["eval_seconds"] = eval_seconds
        # Everything but evaluation: local training, embeddings, aggregation and bookkeeping; the checkpoint write
        # is added after it is done (so a log restored from a checkpoint lacks only that part).
        record["round_seconds"] = time.perf_counter() - started - eval_seconds
        log.append(record)
        tick = time.perf_counter()
        state = {"done": round_no + 1, "aggregator": fed.aggregator.state(), "log": log}
        save_round(folder, round_no + 1, weights, state)
        record["checkpoint_seconds"] = time.perf_counter() - tick
        record["round_seconds"] += record["checkpoint_seconds"]

    load_vector(model, weights)
    return summary(log, shards, bad, resumed_from=start)


def summary(log: list[dict[str, Any]], shards: list[TextDataset], bad: list[int], resumed_from: int) -> dict:
    """The stage's diagnostics: the per-round log, detection over all rounds, timing and sizes."""
    dropped = [c for r in log for c in r["dropped"]]
    hits = sum(len(set(r["dropped"]) & set(r["malicious"])) for r in log)
    seen_bad = sum(len(r["malicious"]) for r in log)
    totals = {k: sum(r.get(k, 0.0) for r in log) for k in ("client_seconds", "embedding_seconds", "round_seconds")}
    out: dict[str, Any] = {
        "rounds": log,
        "malicious_clients": bad,
        "shard_sizes": [len(s) for s in shards],
        "poisoned_samples": sum(sum(s.poisoned) for s in shards),
        "updates_mb": max((r["updates_mb"] for r in log), default=0.0),
        "resumed_from_round": resumed_from,
        **totals,
    }
    if dropped:
        out["detection_precision"] = hits / len(dropped)
    if seen_bad:
        out["detection_recall"] = hits / seen_bad
    if totals["client_seconds"] > 0:
        out["overhead"] = totals["round_seconds"] / totals["client_seconds"]
    return out
