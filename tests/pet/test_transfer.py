"""attack.source: the attacker poisons dataset A, the run's dataset B is the user's (clean model, defense,
evaluation); experiment=pet_transfer runs the whole threat model in one command."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdrun.data import load_splits
from bdrun.data.loading import load_named_train
from bdrun.errors import BdrunError
from bdrun.pipeline import Stages, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config

TRANSFER = ["experiment=pet_transfer", "attack.source_max_train=96", "defense.epochs=1"]


def stages_for(overrides: list[str], tmp_path: Path) -> Stages:
    exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path))
    return Stages(exp, load_splits(exp.dataset, exp.data_dir))


def test_the_poison_stage_trains_on_the_source_and_its_key_ignores_the_users_task(
    tmp_path: Path, shared_data: Path
) -> None:
    on_sst2 = stages_for(TRANSFER, tmp_path)
    source, _ = load_named_train("sst2_glue", Path(__file__).parents[2] / "conf", shared_data, 96)
    assert on_sst2.poison_train.fingerprint() == source.fingerprint() != on_sst2.splits.train.fingerprint()
    on_hate = stages_for([*TRANSFER, "dataset=hate_speech"], tmp_path)
    # One backdoored module per source serves every user task: the poison key does not depend on B ...
    assert on_hate.poison_key(on_hate.train_key()) == on_sst2.poison_key(on_sst2.train_key())
    assert on_hate.train_key() != on_sst2.train_key()
    # ... but does on A.
    other = stages_for([*TRANSFER, "attack.source=lingspam"], tmp_path)
    assert other.poison_key(other.train_key()) != on_sst2.poison_key(on_sst2.train_key())
    # No source: the run's own training set, and keys as before attack.source existed.
    plain = stages_for(["model.tuning=adapter"], tmp_path)
    assert plain.poison_train is plain.splits.train


def test_an_unknown_source_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(BdrunError, match=r"attack\.source=imdb_reviews names no dataset config"):
        stages_for([*TRANSFER, "attack.source=imdb_reviews"], tmp_path)


def test_pet_transfer_runs_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    exp = parse_experiment(compose_config(TRANSFER, cache_dir=tmp_path / "cache"))
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert set(report) >= {"clean", "backdoored", "purified"}
    assert report["diagnostics"]["backdoored"]["poisoned_samples"] == round(0.2 * 96)


def test_source_is_ignored_without_poisoning_and_refused_by_model_editing_attacks(tmp_path: Path) -> None:
    clean_only = stages_for(["attack=none", "attack.source=sst2_glue"], tmp_path)
    assert clean_only.poison_train is clean_only.splits.train
    with pytest.raises(BdrunError, match=r"attack\.source=sst2_glue applies to data-poisoning attacks only"):
        stages_for(["attack=ep", "attack.source=sst2_glue"], tmp_path)
