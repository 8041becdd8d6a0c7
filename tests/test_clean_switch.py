"""clean=false: an attack-only run trains no clean model and its report says there is no clean reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bdrun.errors import BdrunError
from bdrun.pipeline import Stages, parse_experiment, results_table, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config


def test_clean_false_trains_no_clean_model_and_reports_no_reference(tmp_path: Path, monkeypatch) -> None:
    def no_clean_training(self):
        raise AssertionError("clean=false must not train the clean model")

    monkeypatch.setattr(Stages, "train_clean", no_clean_training)
    exp = parse_experiment(compose_config(["clean=false", "attack=badnets"], cache_dir=tmp_path / "cache"))
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))

    assert not (tmp_path / "cache" / "train").exists()  # no train stage in the cache either
    assert (tmp_path / "cache" / "poison").is_dir()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["clean_reference"] is False and "clean" not in saved and "clean" not in saved["stages"]
    assert "side_effect" not in saved["backdoored"] and 0.0 <= saved["backdoored"]["asr"] <= 1.0
    assert "no clean row" in results_table(report, exp).caption


def test_clean_false_without_an_attack_is_a_one_line_error(tmp_path: Path) -> None:
    exp = parse_experiment(compose_config(["clean=false", "attack=none"], cache_dir=tmp_path))
    with pytest.raises(BdrunError, match="clean=false with attack=none"):
        run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))


def test_clean_false_with_a_model_editing_attack_trains_but_does_not_evaluate_the_clean_model(tmp_path: Path) -> None:
    cfg = compose_config(
        ["clean=false", "attack=ep", "attack.epochs=1", "attack.max_steps=20"], cache_dir=tmp_path / "cache"
    )
    report = run(parse_experiment(cfg), tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert len(list((tmp_path / "cache" / "train").glob("*/meta.json"))) == 1  # EP's starting point
    assert len(list((tmp_path / "cache" / "evaluate").glob("*/meta.json"))) == 1  # the backdoored model only
    assert report["clean_reference"] is False and "clean" not in report and "side_effect" not in report["backdoored"]
