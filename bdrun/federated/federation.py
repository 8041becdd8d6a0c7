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

Each round's log also holds, per client, what Krum and Dim-Krum see of its update
(:mod:`bdrun.federated.diagnostics`), whatever the aggregator. Malicious clients may train with their own epochs
and learning rate, poison every eligible row of their shard and take part in every round (``federated.malicious_*``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch

from bdrun.attacks import ATTACKS, Attack, DataPoisoningAttack
from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.evaluation import evaluate_model
from bdrun.federated.aggregators import Aggregator, RoundUpdates
from bdrun.federated.checkpoints import CHECKPOINTS, load_round, save_round
from bdrun.federated.diagnostics import diagnostic_knobs, round_diagnostics
from bdrun.federated.embeddings import client_embedding
from bdrun.federated.setting import (
    FederatedConfig,
    client_seed,
    malicious_clients,
    partition,
    sampled_clients,
)
from bdrun.optimizers import OPTIMIZERS
from bdrun.training import train


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


def client_shards(splits: Splits, fed: Federation, seed: int) -> tuple[list[TextDataset], list[int]]:
    """Each client's training shard (the malicious ones poisoned by the attack) and the malicious client ids."""
    cfg = fed.config
    rows = partition(splits.train.labels, cfg.clients, cfg.partition, cfg.alpha, seed)
    bad = malicious_clients(cfg.clients, cfg.malicious_count, seed) if fed.attack is not None else []
    shards = [splits.train.subset(r) for r in rows]
    for client in bad:
        shards[client] = poison_shard(fed.attack, shards[client], cfg.malicious_poison_all, cfg.malicious_keep_clean)
    return shards, bad


def poison_shard(
    attack: DataPoisoningAttack, shard: TextDataset, everything: bool, keep_clean: bool = False
) -> TextDataset:
    """A malicious client's shard: ``attack.poison_rate`` of it poisoned, or with ``everything`` every row the
    attack may poison (every non-target row under dirty-label poisoning). The attack itself says which rows are
    eligible (asked with a one-row rate), so attacks with their own eligibility rule keep it. With
    ``keep_clean`` the poisoned rows are added to the untouched shard as copies instead of replacing theirs."""
    ask = attack
    if everything:
        ask = copy.copy(attack)
        ask.config = dataclasses.replace(attack.config, poison_rate=1 / len(shard))
        eligible, _ = ask.eligible(shard)
        ask.config = dataclasses.replace(attack.config, poison_rate=len(eligible) / len(shard))
    poisoned = ask.poison(shard)
    if not keep_clean:
        return poisoned
    copies = poisoned.subset([i for i, hit in enumerate(poisoned.poisoned) if hit])
    return TextDataset(shard.texts + copies.texts, shard.labels + copies.labels, shard.poisoned + copies.poisoned)


def malicious_context(context: StageContext, cfg: FederatedConfig) -> StageContext:
    """The stage context malicious clients train with: the run's, with ``federated.malicious_lr`` if set."""
    if cfg.malicious_lr is None:
        return context
    optimizer = OPTIMIZERS.build({**dataclasses.asdict(context.optimizer.config), "lr": cfg.malicious_lr})
    return dataclasses.replace(context, optimizer=optimizer)


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
    bad_context, bad_epochs = malicious_context(context, cfg), cfg.malicious_epochs or cfg.local_epochs
    always = bad if cfg.malicious_every_round else []
    byzantine, rho = diagnostic_knobs(fed.aggregator.config)

    weights, start, log = vector_of(model), 0, []
    resumed = load_round(folder)
    if resumed is not None:
        start, weights, state = resumed
        fed.aggregator.load_state(state["aggregator"])
        log = state["log"]

    for round_no in range(start, cfg.rounds):
        started = time.perf_counter()
        chosen = sampled_clients(cfg.clients, cfg.per_round, seed, round_no, always)
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
                bad_context if client in bad else context,
                bad_epochs if client in bad else cfg.local_epochs,
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
        tick = time.perf_counter()  # measurement, not the method: kept out of round_seconds like evaluation
        record.update(round_diagnostics(updates, byzantine, rho))
        record["diagnostics_seconds"] = time.perf_counter() - tick
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
        # Everything but evaluation and diagnostics: local training, embeddings, aggregation and bookkeeping; the
        # checkpoint write is added after it is done (so a log restored from a checkpoint lacks only that part).
        record["round_seconds"] = time.perf_counter() - started - eval_seconds - record["diagnostics_seconds"]
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
    totals = {
        k: sum(r.get(k, 0.0) for r in log)
        for k in ("client_seconds", "embedding_seconds", "round_seconds", "diagnostics_seconds")
    }
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
