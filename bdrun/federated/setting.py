"""The federated setting's knobs (``conf/federated/``) and the seeded choices it makes: shards, malicious clients,
clients sampled per round. Everything here is a pure function of (config, seed), so a resumed run makes the
same choices as the run it continues.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from bdrun.errors import check

PARTITIONS = ("iid", "dirichlet")
# What the honest (clean) federation does not depend on: every knob of the malicious clients.
MALICIOUS_KNOBS = (
    "malicious",
    "malicious_scale",
    "malicious_poison_all",
    "malicious_keep_clean",
    "malicious_epochs",
    "malicious_lr",
    "malicious_every_round",
)
# Knobs added after federations were cached: at their default they stay out of the stage keys, so the cached
# federations that predate them (and behave exactly as the default) are still found.
LATER_KNOBS = {
    "malicious_poison_all": False,
    "malicious_keep_clean": False,
    "malicious_epochs": None,
    "malicious_lr": None,
    "malicious_every_round": False,
}
DIRICHLET_DRAWS = 100


@dataclasses.dataclass
class FederatedConfig:
    name: str = "none"  # none: ordinary (central) training; anything else names a conf/federated/ preset
    clients: int = 10
    malicious: float = 0.1  # malicious clients (< 1: fraction of clients, rounded down; >= 1: count)
    # A malicious client sends this multiple of its local update (boosting / model replacement, Bagdasaryan et al.
    # 2020, Bhagoji et al. 2019): 1 is a plain poisoned client; larger values survive FedAvg's averaging with the
    # honest majority but make the update larger in L2, which distance-based aggregators see.
    malicious_scale: float = 1.0
    # The attacker's other levers, each at the honest clients' value by default: poison every eligible
    # row of its shard (every non-target row under dirty-label poisoning) instead of attack.poison_rate of it;
    # its own local epochs and learning rate; take part in every round when clients are sampled per round.
    malicious_poison_all: bool = False
    # Keep the clean shard and add the poisoned rows as extra copies, instead of relabelling rows in place: the
    # client then learns its clean task whatever it poisons (in place, poisoning every row leaves no clean
    # non-target row and the update drags the federation towards the target class).
    malicious_keep_clean: bool = False
    malicious_epochs: int | None = None  # null: local_epochs
    malicious_lr: float | None = None  # null: the optimizer's lr
    malicious_every_round: bool = False
    partition: str = "iid"  # iid: equal random shards; dirichlet: label skew, Dirichlet(alpha) per class
    alpha: float = 0.5  # dirichlet concentration (small: strong skew)
    rounds: int = 5
    local_epochs: int = 1  # epochs of local training per round (the trainer group's other knobs apply)
    clients_per_round: float | None = None  # null: every client; < 1: fraction; >= 1: count
    server_lr: float = 1.0  # global += server_lr * aggregate
    eval_every: int = 1  # evaluate the global model every k rounds for the curves (0: never; the final
    # evaluation is the ordinary evaluate stage)
    eval_samples: int | None = None  # per-round curves on a seeded subset of the test set (null: all of it)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        check(self.clients >= 1, f"federated.clients={self.clients} must be at least 1")
        check(self.malicious >= 0, f"federated.malicious={self.malicious} must be >= 0 (a fraction or a count)")
        check(
            self.malicious_count <= self.clients,
            f"federated.malicious={self.malicious} exceeds federated.clients={self.clients}",
        )
        check(self.malicious_scale > 0, f"federated.malicious_scale={self.malicious_scale} must be positive, e.g. 1")
        check(
            self.malicious_epochs is None or self.malicious_epochs >= 1,
            f"federated.malicious_epochs={self.malicious_epochs} must be at least 1 (or null for local_epochs)",
        )
        check(
            self.malicious_lr is None or self.malicious_lr > 0,
            f"federated.malicious_lr={self.malicious_lr} must be positive (or null for the optimizer's lr)",
        )
        check(
            self.partition in PARTITIONS,
            f"federated.partition={self.partition} is not supported; use one of {', '.join(PARTITIONS)}",
        )
        check(self.alpha > 0, f"federated.alpha={self.alpha} must be positive, e.g. 0.5")
        check(self.rounds >= 1, f"federated.rounds={self.rounds} must be at least 1")
        check(self.local_epochs >= 1, f"federated.local_epochs={self.local_epochs} must be at least 1")
        check(
            self.clients_per_round is None or self.clients_per_round > 0,
            f"federated.clients_per_round={self.clients_per_round} must be positive (or null for every client)",
        )
        check(
            not self.malicious_every_round or self.malicious_count <= self.per_round,
            f"federated.malicious_every_round=true needs room for {self.malicious_count} malicious clients in "
            f"each round, but only {self.per_round} take part; raise federated.clients_per_round",
        )
        check(self.server_lr > 0, f"federated.server_lr={self.server_lr} must be positive")
        check(self.eval_every >= 0, f"federated.eval_every={self.eval_every} must be >= 0")
        check(
            self.eval_samples is None or self.eval_samples >= 1,
            f"federated.eval_samples={self.eval_samples} must be a positive count (or null)",
        )

    def check_data(self, train_labels: Sequence[int], seed: int) -> None:
        """The partition leaves every client some data: checked on the loaded training split before the first
        stage, since the federation itself partitions only once its first stage has started."""
        if self.enabled:
            partition(train_labels, self.clients, self.partition, self.alpha, seed)

    def key_fields(self) -> dict[str, Any]:
        """The setting as it enters the stage keys: every knob, except later knobs left at their default."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items() if not (k in LATER_KNOBS and v == LATER_KNOBS[k])}

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    @property
    def malicious_count(self) -> int:
        return int(self.malicious * self.clients) if self.malicious < 1 else int(self.malicious)

    @property
    def per_round(self) -> int:
        if self.clients_per_round is None:
            return self.clients
        share = self.clients_per_round
        return max(1, min(self.clients, int(share * self.clients) if share < 1 else int(share)))


def partition(labels: Sequence[int], clients: int, scheme: str, alpha: float, seed: int) -> list[list[int]]:
    """Training-set row indices per client.

    iid: a seeded permutation cut into ``clients`` near-equal shards. dirichlet: per class, that class's rows go
    to the clients in proportions drawn from Dirichlet(alpha, ..., alpha) (the usual label-skew protocol); a
    draw that leaves a client empty is redrawn (up to 100 times), as common FL benchmarks do.
    """
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        order = rng.permutation(len(labels))
        shards = [sorted(part.tolist()) for part in np.array_split(order, clients)]
    else:
        for _ in range(DIRICHLET_DRAWS):  # redraw (same seeded stream) while a client is left without data
            shards = _dirichlet_shards(labels, clients, alpha, rng)
            if all(shards):
                break
    empty = [c for c, s in enumerate(shards) if not s]
    check(
        not empty,
        f"federated partition leaves client(s) {empty} without data; use fewer federated.clients, more data, "
        "or a larger federated.alpha",
    )
    return shards


def _dirichlet_shards(labels: Sequence[int], clients: int, alpha: float, rng: np.random.Generator) -> list[list[int]]:
    shards: list[list[int]] = [[] for _ in range(clients)]
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, y in enumerate(labels) if y == label])
        cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(rows)).astype(int)[:-1]
        for client, part in enumerate(np.split(rows, cuts)):
            shards[client].extend(part.tolist())
    return [sorted(s) for s in shards]


def malicious_clients(clients: int, count: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(clients), count))


def sampled_clients(clients: int, per_round: int, seed: int, round_no: int, always: Sequence[int] = ()) -> list[int]:
    """The clients of one round, seeded by (seed, round). ``always`` (malicious clients that take part in every
    round) are included and the other places drawn from the rest; without them the draw is what it always was,
    so cached federations stay valid."""
    if per_round >= clients:
        return list(range(clients))
    rng = random.Random(seed * 1_000_003 + round_no)
    if not always:
        return sorted(rng.sample(range(clients), per_round))
    others = [c for c in range(clients) if c not in always]
    return sorted([*always, *rng.sample(others, max(0, per_round - len(always)))])


def client_seed(seed: int, round_no: int, client: int) -> int:
    """The seed of one client's local training in one round (data order and dropout)."""
    return (seed * 1_000_003 + round_no * 1_009 + client) % (2**31)
