"""The federated setting: shards, the pure local update, cache keys per role, per-round metrics, kill + resume."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.data import Splits, TextDataset, load_splits
from bdrun.errors import BdrunError
from bdrun.federated import AGGREGATORS, FederatedConfig, federation
from bdrun.federated.federation import Federation, local_update, run_federation, vector_of
from bdrun.federated.setting import malicious_clients, partition, sampled_clients
from bdrun.pipeline import make_stages, parse_experiment, run
from bdrun.tracking import Tracker
from tests.conftest import compose_config
from tests.defenses.conftest import CLEAN_TEXTS

# 3 clients of 16 samples (one step each), one malicious, 2 rounds, curves on 32 test samples: seconds on a CPU.
FED = [
    "federated=iid",
    "federated.clients=3",
    "federated.malicious=1",
    "federated.rounds=2",
    "federated.eval_samples=32",
    "dataset.max_samples.train=48",
    "attack.poison_rate=0.3",
]


class Recorder(Tracker):
    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, metrics: dict) -> None:
        self.logged.append(metrics)


def stages_for(overrides: list[str], tmp_path: Path):
    exp = parse_experiment(compose_config([*FED, *overrides], cache_dir=tmp_path))
    return make_stages(exp, load_splits(exp.dataset, exp.data_dir))


def test_partitions_cover_the_training_set_once_and_dirichlet_skews_labels() -> None:
    labels = [i % 2 for i in range(400)]
    for scheme, alpha in (("iid", 1.0), ("dirichlet", 0.1), ("dirichlet", 100.0)):
        shards = partition(labels, 5, scheme, alpha, seed=3)
        assert sorted(i for s in shards for i in s) == list(range(400))
        assert shards == partition(labels, 5, scheme, alpha, seed=3)
    assert {len(s) for s in partition(labels, 5, "iid", 1.0, seed=3)} == {80}
    share = lambda shards: [np.mean([labels[i] for i in s]) for s in shards]  # noqa: E731
    assert max(abs(p - 0.5) for p in share(partition(labels, 5, "dirichlet", 0.1, seed=3))) > 0.3
    assert max(abs(p - 0.5) for p in share(partition(labels, 5, "dirichlet", 100.0, seed=3))) < 0.15
    with pytest.raises(BdrunError, match="without data"):
        partition(labels[:4], 10, "iid", 1.0, seed=0)


def test_client_sampling_and_malicious_choice_are_seeded_counts() -> None:
    setting = FederatedConfig(name="iid", clients=10, malicious=0.2, clients_per_round=0.5)
    assert (setting.malicious_count, setting.per_round) == (2, 5)
    rounds = [sampled_clients(10, setting.per_round, seed=1, round_no=r) for r in range(4)]
    assert all(len(set(r)) == 5 for r in rounds) and len({tuple(r) for r in rounds}) > 1
    assert rounds == [sampled_clients(10, 5, seed=1, round_no=r) for r in range(4)]
    assert sampled_clients(10, 10, seed=1, round_no=3) == list(range(10))
    chosen = malicious_clients(10, 2, seed=1)
    assert chosen == malicious_clients(10, 2, seed=1) and len(set(chosen)) == 2
    with pytest.raises(BdrunError, match="exceeds"):
        FederatedConfig(name="iid", clients=3, malicious=4)


def test_local_update_is_a_pure_function_of_weights_shard_and_seed(pretrained, context, clean) -> None:
    weights = vector_of(pretrained)
    first = local_update(pretrained, weights, clean, 7, context, 1)
    assert torch.allclose(weights + first, vector_of(copy.deepcopy(pretrained)))  # scratch holds the client model
    local_update(pretrained, weights + 0.01, clean, 3, context, 1)  # scratch state left behind must not matter
    again = local_update(pretrained, weights, clean, 7, context, 1)
    other_seed = local_update(pretrained, weights, clean, 8, context, 1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)
    assert first.abs().sum() > 0


def test_keys_share_the_clean_and_backdoored_federations_across_aggregators(tmp_path: Path) -> None:
    def keys(overrides: list[str]) -> tuple[str, str, str]:
        stages = stages_for(overrides, tmp_path)
        train = stages.train_key()
        poison = stages.poison_key(train)
        return train, poison, stages.purify_key(poison)

    krum, dim_krum = keys(["defense=krum"]), keys(["defense=dim_krum"])
    assert krum[:2] == dim_krum[:2] and krum[2] != dim_krum[2]
    assert keys(["defense=krum", "federated.malicious=2"])[0] == krum[0]  # the clean federation has no malicious
    boosted = keys(["defense=krum", "federated.malicious_scale=5"])
    assert boosted[0] == krum[0] and boosted[1] != krum[1]
    assert keys(["defense=krum", "attack=addsent"])[0] == krum[0]
    assert keys(["defense=krum", "attack=addsent"])[1] != krum[1]
    assert keys(["defense=krum", "federated.rounds=3"])[0] != krum[0]
    assert stages_for(["defense=fedavg"], tmp_path).defends_in_training() is False
    assert stages_for(["defense=fedavg", "defense.weighted=false"], tmp_path).defends_in_training() is True


def test_an_aggregator_without_a_federation_and_a_model_editing_attack_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(BdrunError, match="federated=iid"):  # parsing is what preflight runs, before any job
        parse_experiment(compose_config(["defense=krum"], cache_dir=tmp_path))
    exp = parse_experiment(compose_config(["federated=iid", "attack=ep"], cache_dir=tmp_path))
    with pytest.raises(BdrunError, match="data-poisoning"):
        make_stages(exp, load_splits(exp.dataset, exp.data_dir))


def test_a_federated_run_without_the_clean_reference_poisons_from_the_pretrained_model(tmp_path: Path) -> None:
    """clean=false: no clean federation is trained, and the backdoored one gets the same key as with it."""
    with_clean = stages_for(["defense=fedavg"], tmp_path).poison_key("any clean key")
    cfg = compose_config([*FED, "defense=fedavg", "clean=false"], cache_dir=tmp_path)
    report = run(parse_experiment(cfg), tmp_path / "run", Recorder())
    assert "clean" not in report and report["clean_reference"] is False
    assert report["stages"]["backdoored"]["key"] == with_clean
    assert (tmp_path / "poison").is_dir() and not (tmp_path / "train").exists()  # no clean federation built


def test_federated_run_reports_per_round_metrics_and_detection(tmp_path: Path) -> None:
    cfg = compose_config([*FED, "defense=multi_krum", "defense.byzantine=1"], cache_dir=tmp_path)
    tracker = Recorder()
    report = run(parse_experiment(cfg), tmp_path / "run", tracker)

    rounds = report["federation"]["purified"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all({"cacc", "asr", "recall", "dropped", "client_seconds", "round_seconds"} <= r.keys() for r in rounds)
    assert all(len(r["dropped"]) == 1 for r in rounds)  # multi-krum keeps n - f = 2 of 3
    assert all(r["recall"] == float(r["malicious"][0] in r["dropped"]) for r in rounds)
    assert "asr" not in report["federation"]["clean"]["rounds"][0]  # the clean key holds no attack
    assert report["purified"]["detection_recall"] == pytest.approx(np.mean([r["recall"] for r in rounds]))
    assert report["federation"]["backdoored"]["poisoned_samples"] == round(0.3 * 16)
    assert (
        report["federation"]["backdoored"]["malicious_clients"] == report["federation"]["purified"]["malicious_clients"]
    )
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["federation"]["purified"]["rounds"][1]["round"] == 2
    )
    curves = [p for p in tracker.logged if "round" in p]  # one tracker point per round, every role's curve in it
    assert [p["round"] for p in curves] == [1, 2]
    assert {"rounds/clean/cacc", "rounds/backdoored/asr", "rounds/purified/asr", "rounds/purified/recall"} <= curves[
        0
    ].keys()
    # The regime diagnostics: per client in the round log, malicious vs honest summaries in the tracker.
    assert all(len(r["l2_score"]) == len(r["dim_score"]) == len(r["clients"]) for r in rounds)
    assert {"rounds/backdoored/l2_score/malicious", "rounds/purified/selected_strength/honest_max"} <= curves[0].keys()


def tiny_splits() -> Splits:
    texts = CLEAN_TEXTS * 2
    train = TextDataset(texts, [i % 2 for i in range(len(texts))])
    probe = TextDataset(CLEAN_TEXTS, [i % 2 for i in range(len(CLEAN_TEXTS))])
    return Splits(train, probe, probe, num_labels=2)


def test_a_killed_federation_resumes_at_its_last_round_and_ends_as_an_uninterrupted_one(
    pretrained, context, monkeypatch
) -> None:
    """Dim-Krum with memory and noise (state carried across rounds) on 3 clients, one malicious, 2 rounds."""
    setting = FederatedConfig(name="iid", clients=3, malicious=1, rounds=2)
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.3})

    def federate(work: Path) -> tuple[torch.nn.Module, dict]:
        aggregator = AGGREGATORS.build({"name": "dim_krum", "byzantine": 1, "memory": 0.9, "noise": 0.1})
        fed = Federation(setting, aggregator, attack=attack, eval_attack=attack)
        model = copy.deepcopy(pretrained)
        return model, run_federation(model, tiny_splits(), fed, dataclasses.replace(context, work_dir=work), "t")

    whole_model, whole = federate(context.work_dir / "whole")

    saved = federation.save_round

    def killing_save(folder, done, weights, state):
        saved(folder, done, weights, state)
        if done == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(federation, "save_round", killing_save)
    with pytest.raises(KeyboardInterrupt):
        federate(context.work_dir / "killed")
    monkeypatch.setattr(federation, "save_round", saved)
    trained: list[int] = []
    original = federation.local_update
    monkeypatch.setattr(federation, "local_update", lambda *a, **k: trained.append(1) or original(*a, **k))
    resumed_model, resumed = federate(context.work_dir / "killed")

    assert len(trained) == 3 and resumed["resumed_from_round"] == 1  # only the last round's clients trained
    keep = ("round", "clients", "malicious", "dropped", "cacc", "asr", "precision", "recall")
    assert [{k: r.get(k) for k in keep} for r in resumed["rounds"]] == [
        {k: r.get(k) for k in keep} for r in whole["rounds"]
    ]
    assert torch.equal(vector_of(resumed_model), vector_of(whole_model))


def test_client_embeddings_separate_a_client_with_shifted_labels(pretrained, context) -> None:
    """Three clients with balanced labels and one whose shard is almost all label 1: on a probe set, the shifted
    client's embedding is farther from every honest one than the honest ones are from each other."""
    from bdrun.federated.aggregators import pairwise_sq_distances
    from bdrun.federated.embeddings import client_embedding

    texts = CLEAN_TEXTS * 2
    balanced = [TextDataset(texts, [(i + k) % 2 for i in range(len(texts))]) for k in range(3)]
    shifted = TextDataset(texts, [1 if i % 8 else 0 for i in range(len(texts))])
    probe = TextDataset(CLEAN_TEXTS, [0] * len(CLEAN_TEXTS))
    weights = vector_of(pretrained)
    embeddings = []
    for client, shard in enumerate([*balanced, shifted]):
        local_update(pretrained, weights, shard, client, context, 1)
        embeddings.append(client_embedding(pretrained, probe, context, "probs"))
    distances = pairwise_sq_distances(torch.stack(embeddings))
    honest = distances[:3, :3][~torch.eye(3, dtype=torch.bool)]
    assert distances[3, :3].min() > 2 * honest.max()


def test_a_boosted_malicious_client_sends_its_update_times_the_scale_and_honest_ones_are_untouched(
    pretrained, context
) -> None:
    """``federated.malicious_scale``: only the malicious client's update is multiplied, after its local training."""
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.3})

    def first_round_updates(scale: float) -> tuple[torch.Tensor, list[int]]:
        setting = FederatedConfig(name="iid", clients=3, malicious=1, rounds=1, eval_every=0, malicious_scale=scale)
        fed = Federation(setting, AGGREGATORS.build({"name": "fedavg"}), attack=attack, eval_attack=attack)
        seen: list[torch.Tensor] = []
        aggregate = fed.aggregator.aggregate
        fed.aggregator.aggregate = lambda updates: seen.append(updates.updates.clone()) or aggregate(updates)
        work = dataclasses.replace(context, work_dir=context.work_dir / f"scale{scale}")
        report = run_federation(copy.deepcopy(pretrained), tiny_splits(), fed, work, "t")
        record = report["rounds"][0]
        return seen[0], [record["clients"].index(c) for c in record["malicious"]]

    plain, malicious = first_round_updates(1.0)
    boosted, _ = first_round_updates(4.0)
    bad = malicious[0]  # the row of the malicious client
    honest = [row for row in range(3) if row != bad]
    assert plain[bad].abs().sum() > 0
    torch.testing.assert_close(boosted[bad], 4.0 * plain[bad])
    assert torch.equal(boosted[honest], plain[honest])
