"""Stage caching: keys depend on exactly what determines a stage; reruns reuse; failed builds leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bdrun.cache import StageCache
from bdrun.data import load_splits
from bdrun.pipeline import Stages, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config


def stages_for(overrides: list[str], tmp_path: Path) -> Stages:
    exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path))
    return Stages(exp, load_splits(exp.dataset, exp.data_dir))


def keys(overrides: list[str], tmp_path: Path) -> dict[str, str]:
    stages = stages_for(overrides, tmp_path)
    train = stages.train_key()
    poison = stages.poison_key(train)
    return {"train": train, "poison": poison, "purify": stages.purify_key(poison)}


def test_a_defense_revision_bump_changes_only_its_purify_key(tmp_path: Path, monkeypatch) -> None:
    from bdrun.defenses.fine_tuning import FineTuning

    before = keys(["defense=fine_tuning"], tmp_path)
    monkeypatch.setattr(FineTuning, "revision", 2)
    after = keys(["defense=fine_tuning"], tmp_path)
    assert (after["train"], after["poison"]) == (before["train"], before["poison"])
    assert after["purify"] != before["purify"]


def test_defense_changes_do_not_touch_training_or_poisoning_keys(tmp_path: Path) -> None:
    plain = keys(["defense=none"], tmp_path)
    defended = keys(["defense=fine_tuning", "defense.clean_size=0.1"], tmp_path)
    assert plain["train"] == defended["train"]
    assert plain["poison"] == defended["poison"]
    assert plain["purify"] != defended["purify"]


def test_attack_changes_change_the_poison_key_only(tmp_path: Path) -> None:
    base = keys(["attack=badnets"], tmp_path)
    for change in (["attack.poison_rate=0.2"], ["attack.triggers=[mn]"], ["attack=addsent"]):
        other = keys(change, tmp_path)
        assert other["train"] == base["train"]
        assert other["poison"] != base["poison"]


def test_logging_and_eval_knobs_do_not_change_keys(tmp_path: Path) -> None:
    base = keys([], tmp_path)
    assert keys(["logger=wandb", "trainer.eval_batch_size=7", "trainer.checkpoint_every=3"], tmp_path) == base
    assert keys(["optimizer.lr=3e-5"], tmp_path)["train"] != base["train"]
    assert keys(["seed=1"], tmp_path)["train"] != base["train"]
    assert keys(["dataset.max_samples.train=80"], tmp_path)["train"] != base["train"]


def test_a_failed_build_leaves_no_complete_artifact(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)

    def crash(out: Path, work: Path) -> dict:
        (out / "model.safetensors").write_text("half written")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("train", "abc", crash, "train")
    assert not cache.is_complete("train", "abc")

    built = cache.get_or_build("train", "abc", lambda out, work: {"ok": 1}, "train")
    assert not built.reused and built.meta()["ok"] == 1
    assert cache.get_or_build("train", "abc", crash, "train").reused  # complete: never rebuilt


def test_tiny_end_to_end_run_then_rerun_reuses_everything(tmp_path: Path) -> None:
    cfg = compose_config(["defense=fine_tuning", "defense.epochs=1"], cache_dir=tmp_path / "cache")
    first = run(parse_experiment(cfg), tmp_path / "run1", NoTracker(TrackerConfig("none")))

    for role in ("clean", "backdoored", "purified"):
        assert 0.0 <= first[role]["cacc"] <= 1.0 and 0.0 <= first[role]["asr"] <= 1.0
        assert first[role]["test_samples"] == 64
    assert first["diagnostics"]["backdoored"]["poisoned_samples"] == round(0.1 * 96)
    assert first["delta"]["asr"] == pytest.approx(first["purified"]["asr"] - first["backdoored"]["asr"])
    assert not any(stage["reused"] for stage in first["stages"].values())
    assert json.loads((tmp_path / "run1" / "metrics.json").read_text())["clean"] == first["clean"]

    second = run(parse_experiment(cfg), tmp_path / "run2", NoTracker(TrackerConfig("none")))
    assert all(stage["reused"] for stage in second["stages"].values())
    assert {k: second[k] for k in ("clean", "backdoored", "purified")} == {
        k: first[k] for k in ("clean", "backdoored", "purified")
    }


def test_same_seed_gives_identical_metrics_from_scratch(tmp_path: Path) -> None:
    reports = []
    for name in ("a", "b"):
        cfg = compose_config(["attack=addsent"], cache_dir=tmp_path / name)
        reports.append(run(parse_experiment(cfg), tmp_path / f"run-{name}", NoTracker(TrackerConfig("none"))))
    a, b = reports
    assert (a["clean"], a["backdoored"]) == (b["clean"], b["backdoored"])
    weights = [
        (tmp_path / n / "poison" / a["stages"]["backdoored"]["key"] / "model.safetensors").read_bytes()
        for n in ("a", "b")
    ]
    assert weights[0] == weights[1]


def test_badnets_cf_preset_is_badnets_with_the_cf_trigger(tmp_path: Path) -> None:
    """The sweepable preset and the explicit override share a cache key, so either reuses the other's models."""
    assert keys(["attack=badnets_cf"], tmp_path) == keys(["attack=badnets", "attack.triggers=[cf]"], tmp_path)
