"""The attacker's levers (federated.malicious_*) and local training with SGD."""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path

import torch

from bdrun.attacks import ATTACKS
from bdrun.data import TextDataset
from bdrun.federated import AGGREGATORS, FederatedConfig, federation
from bdrun.federated.federation import Federation, local_update, poison_shard, run_federation, vector_of
from bdrun.federated.setting import sampled_clients
from bdrun.optimizers import OPTIMIZERS
from bdrun.pipeline import parse_experiment
from tests.conftest import compose_config
from tests.federated.test_federation import stages_for, tiny_splits
from tests.test_paper_presets import composed


def test_malicious_clients_can_take_part_in_every_round_and_the_plain_draw_is_unchanged() -> None:
    for round_no in range(6):
        chosen = sampled_clients(10, 4, seed=3, round_no=round_no, always=[2, 7])
        assert {2, 7} <= set(chosen) and len(set(chosen)) == 4
        # Without `always`, the draw is the one cached federations were built with.
        old = sorted(random.Random(3 * 1_000_003 + round_no).sample(range(10), 4))
        assert sampled_clients(10, 4, seed=3, round_no=round_no) == old
    assert any(not {2, 7} <= set(sampled_clients(10, 4, seed=3, round_no=r)) for r in range(6))


def test_new_knobs_at_their_default_leave_every_key_as_it_was(tmp_path: Path) -> None:
    assert "malicious_lr" not in FederatedConfig(name="iid").key_fields()
    assert FederatedConfig(name="iid", malicious_lr=1e-3).key_fields()["malicious_lr"] == 1e-3

    def keys(overrides: list[str]) -> tuple[str, str]:
        stages = stages_for(["defense=krum", *overrides], tmp_path)
        return stages.train_key(), stages.poison_key(stages.train_key())

    plain = keys([])
    for lever in ("malicious_lr=0.001", "malicious_epochs=3", "malicious_poison_all=true", "malicious_keep_clean=true"):
        clean, poison = keys([f"federated.{lever}"])
        assert clean == plain[0] and poison != plain[1], lever  # the clean federation has no malicious client


def test_poisoning_all_rows_poisons_every_eligible_row_of_the_shard() -> None:
    shard = TextDataset([f"sentence number {i} here" for i in range(20)], [i % 2 for i in range(20)])
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.1, "target_label": 1})
    assert sum(poison_shard(attack, shard, everything=False).poisoned) == 2
    poisoned = poison_shard(attack, shard, everything=True)
    assert sum(poisoned.poisoned) == 10  # every non-target row (dirty label)
    assert all(poisoned.labels[i] == 1 for i in range(20)) and attack.config.poison_rate == 0.1


def test_keeping_the_clean_shard_adds_the_poisoned_rows_as_copies() -> None:
    """malicious_keep_clean: the clean shard stays whole (every row, text and label, in order) and the poisoned
    rows come on top, triggered and labelled as the target, so poisoning takes no clean row away."""
    shard = TextDataset([f"sentence number {i} here" for i in range(20)], [i % 2 for i in range(20)])
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.1, "target_label": 1, "triggers": ["cf"]})
    for everything, added in ((False, 2), (True, 10)):
        kept = poison_shard(attack, shard, everything=everything, keep_clean=True)
        assert len(kept) == 20 + added
        assert (kept.texts[:20], kept.labels[:20], any(kept.poisoned[:20])) == (shard.texts, shard.labels, False)
        extra = kept.subset(range(20, len(kept)))
        assert all(extra.poisoned) and set(extra.labels) == {1}
        assert all("cf" in text.split() and text not in shard.texts for text in extra.texts)


def test_malicious_clients_train_with_their_own_epochs_and_learning_rate(pretrained, context, monkeypatch) -> None:
    seen: dict[int, tuple[float, int]] = {}

    def record(model, weights, shard, seed, ctx, epochs, desc):
        seen[int(desc.split()[-1])] = (ctx.optimizer.config.lr, epochs)
        return torch.zeros_like(weights)

    monkeypatch.setattr(federation, "local_update", record)
    setting = FederatedConfig(
        name="iid", clients=3, malicious=1, rounds=1, eval_every=0, malicious_lr=0.05, malicious_epochs=4
    )
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.3})
    fed = Federation(setting, AGGREGATORS.build({"name": "fedavg"}), attack=attack, eval_attack=attack)
    report = run_federation(copy.deepcopy(pretrained), tiny_splits(), fed, context, "t")
    bad = report["malicious_clients"][0]
    assert seen.pop(bad) == (0.05, 4)
    assert set(seen.values()) == {(context.optimizer.config.lr, 1)}


def test_local_training_with_sgd_moves_the_weights_and_is_seeded(pretrained, context, clean) -> None:
    """optimizer=sgd in federated runs: the same pure local update as with AdamW, with its own step sizes."""
    sgd = dataclasses.replace(context, optimizer=OPTIMIZERS.build({"name": "sgd", "lr": 0.05}))
    weights = vector_of(pretrained)
    first = local_update(pretrained, weights, clean, 7, sgd, 1)
    assert torch.equal(first, local_update(pretrained, weights, clean, 7, sgd, 1))
    assert first.abs().sum() > 0 and torch.isfinite(first).all()
    adamw = local_update(pretrained, weights, clean, 7, context, 1)
    assert not torch.allclose(first, adamw)


def test_the_dim_krum_presets_sweep_the_full_method_without_boosting(tmp_path: Path) -> None:
    for preset in ("paper_dim_krum", "paper_dim_krum_cpu"):
        cfg = composed(preset)
        assert cfg.federated.malicious_scale == 1, preset
        assert "dim_krum_full" in str(cfg.hydra.sweeper.params.defense).split(","), preset
    full = parse_experiment(compose_config(["federated=iid", "defense=dim_krum_full"], tmp_path)).defense.config
    assert (full.name, full.memory, full.noise) == ("dim_krum", 0.9, 0.5)
