"""A defense with the shared E-PUR flag runs through the real pipeline and reports its diagnostics."""

from __future__ import annotations

from pathlib import Path

from bdrun.pipeline import parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config


def test_fine_mixing_with_e_pur_reports_its_diagnostics(tmp_path: Path) -> None:
    overrides = ["defense=fine_mixing", "defense.e_pur=true", "defense.e_pur_top_n=5", "defense.epochs=1"]
    overrides.append("defense.rho_search=[0.3]")  # one candidate: the dev search runs, the fraction is known
    cfg = compose_config([*overrides, "defense.clean_size=16"], cache_dir=tmp_path / "cache")
    report = run(parse_experiment(cfg), tmp_path / "run", NoTracker(TrackerConfig("none")))

    diagnostics = report["diagnostics"]["purified"]["defense"]
    assert diagnostics["clean_samples"] == 16
    assert diagnostics["rho"] == 0.3 and list(diagnostics["rho_search"]) == ["0.3"]
    assert 0 <= diagnostics["suspect_dev_accuracy"] <= 1 and 0 <= diagnostics["dev_accuracy"] <= 1
    assert len(diagnostics["e_pur"]["top_suspects"]) == 5
    assert all(isinstance(s["token"], str) for s in diagnostics["e_pur"]["top_suspects"])
    assert 0.25 < diagnostics["entries_kept"] / (diagnostics["entries_kept"] + diagnostics["entries_reset"]) < 0.35
    assert 0 <= report["purified"]["asr"] <= 1 and "delta" in report
