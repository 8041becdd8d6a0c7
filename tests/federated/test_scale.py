"""Scale: the memory check before any stage, and federations of PET-sized updates (model.tuning=lora|adapter)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.errors import BdrunError
from bdrun.federated import AGGREGATORS, FederatedConfig, memory
from bdrun.federated.aggregators import RoundUpdates
from bdrun.federated.federation import Federation, run_federation, vector_of
from bdrun.federated.memory import check_updates_fit, trainable_count
from bdrun.models import ModelConfig, load_pretrained
from bdrun.pipeline import parse_experiment, run
from tests.conftest import compose_config
from tests.federated.test_federation import FED, Recorder, stages_for, tiny_splits


def test_a_federation_too_large_for_memory_is_refused_in_one_line_naming_the_numbers() -> None:
    with pytest.raises(BdrunError) as err:
        check_updates_fit(100, 109_482_240, "federated.clients", available=12 * 10**9)
    message = str(err.value)
    assert "\n" not in message
    for part in ("federated.clients=100", "109,482,240 trainable", "43.8 GB", "12.0 GB", "model.tuning=lora"):
        assert part in message, part
    assert "at most 27 clients" in message  # 12e9 // (109,482,240 * 4)
    check_updates_fit(100, 109_482_240, "federated.clients", available=100 * 109_482_240 * 4)  # exactly fits


def test_the_check_runs_before_any_stage_on_the_models_trainable_parameters(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    with pytest.raises(BdrunError, match=r"federated\.clients=3 clients x [\d,]+ trainable parameters") as err:
        stages_for(["defense=krum"], tmp_path)
    full = int(str(err.value).split(" x ")[1].split()[0].replace(",", ""))
    with pytest.raises(BdrunError, match=r"federated\.clients_per_round=2 clients") as err:
        stages_for(["defense=krum", "federated.clients_per_round=2", "model.tuning=lora"], tmp_path)
    lora = int(str(err.value).split(" x ")[1].split()[0].replace(",", ""))
    assert lora < full / 10  # LoRA's updates are a small fraction of the full model's
    monkeypatch.setattr(memory, "available_bytes", lambda: 10**12)
    stages_for(["defense=krum"], tmp_path)


@pytest.mark.parametrize("tuning", ["lora", "adapter"])
def test_pet_federations_send_only_trainable_tensors_and_every_aggregator_takes_them(
    tuning: str, small_model: ModelConfig, context, monkeypatch
) -> None:
    model = load_pretrained(dataclasses.replace(small_model, tuning=tuning), num_labels=2, seed=0)
    trainable = trainable_count(model)
    assert trainable < sum(p.numel() for p in model.parameters()) / 10
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    tuned = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    seen: list[torch.Tensor] = []
    fedavg = AGGREGATORS.build({"name": "fedavg"})
    aggregate = fedavg.aggregate
    monkeypatch.setattr(fedavg, "aggregate", lambda r: seen.append(r.updates.clone()) or aggregate(r))
    setting = FederatedConfig(name="iid", clients=3, malicious=1, rounds=1, eval_every=0)
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.3})
    report = run_federation(model, tiny_splits(), Federation(setting, fedavg, attack=attack), context, "t")

    assert seen[0].shape == (3, trainable) and vector_of(model).numel() == trainable
    assert report["updates_mb"] == pytest.approx(3 * trainable * 4 / 2**20)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, tuned[n]) for n, p in model.named_parameters() if n in tuned)
    for name in AGGREGATORS.names():
        if name == "client_embedding":
            continue  # judges embeddings, not updates; its averaging is Multi-Krum's
        aggregator = AGGREGATORS.build({"name": name, **({"byzantine": 0} if name == "bulyan" else {})})
        result = aggregator.aggregate(RoundUpdates(seen[0], [0, 1, 2], torch.ones(3)))
        assert result.update.shape == (trainable,) and torch.isfinite(result.update).all(), name


def test_a_federated_run_with_lora_reports_pet_sized_updates(tmp_path: Path) -> None:
    cfg = compose_config([*FED, "model.tuning=lora", "defense=dim_krum_full", "defense.byzantine=1"], tmp_path)
    report = run(parse_experiment(cfg), tmp_path / "run", Recorder())
    exp = parse_experiment(cfg)
    trainable = trainable_count(load_pretrained(exp.model, num_labels=2, seed=exp.seed))
    for role in ("clean", "backdoored", "purified"):
        assert report["federation"][role]["updates_mb"] == pytest.approx(3 * trainable * 4 / 2**20), role
    assert all(len(r["l2_score"]) == 3 for r in report["federation"]["purified"]["rounds"])
    assert report["stages"]["purified"]["stage"] == "purify"  # Dim-Krum with memory and noise, on LoRA updates


def test_available_memory_is_capped_by_the_cgroup_limit(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:   8000000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "CGROUP", tmp_path / "nowhere")
    assert memory.available_bytes() == 8_000_000 * 1024
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("4000000000\n")
    (cgroup / "memory.current").write_text("1000000000\n")
    monkeypatch.setattr(memory, "CGROUP", cgroup)
    assert memory.available_bytes() == 3_000_000_000
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available_bytes() == 8_000_000 * 1024
