"""The seed papers' table presets (``conf/experiment/paper_*``): each declares its sweep, runs with ``-m``, and has
a ``_cpu`` variant that runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.types import RunMode

from bdrun.cli import CONF_DIR
from bdrun.configs import config_loader, parse_arguments
from bdrun.errors import BdrunError
from bdrun.preflight import preflight
from bdrun.results import find_jobs
from tests.conftest import TINY, run_cli

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("paper_*.yaml") if not p.stem.endswith("_cpu"))


def composed(preset: str):
    args = parse_arguments(["-m", f"experiment={preset}"])
    return config_loader(args).load_configuration("config", [f"experiment={preset}"], RunMode.MULTIRUN)


def test_every_seed_paper_has_a_full_and_a_cpu_preset() -> None:
    assert len(PRESETS) >= 8, PRESETS
    for preset in PRESETS:
        assert (CONF_DIR / "experiment" / f"{preset}_cpu.yaml").is_file(), f"{preset} has no _cpu variant"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_a_preset_and_its_cpu_variant_passes_the_checks(preset: str) -> None:
    for name in (preset, f"{preset}_cpu"):
        params = composed(name).hydra.sweeper.params
        assert params, f"{name} declares no sweep"
        expected = 1
        for values in params.values():
            expected *= len(str(values).split(","))
        jobs = preflight(["-m", f"experiment={name}"])  # composes and validates every job
        assert len(jobs) == expected
    cpu = composed(f"{preset}_cpu")
    assert str(cpu.model.path).startswith("pkg:"), "a _cpu preset must run offline (a packaged model)"


def test_the_command_line_replaces_a_swept_key_and_without_m_a_preset_sweep_is_refused() -> None:
    jobs = preflight(["-m", "experiment=paper_ep_cpu"])
    assert len(jobs) == 6  # 3 attacks x 2 datasets
    assert {j[1] for j in jobs} == {"dataset=sst2", "dataset=hate_speech"}
    narrowed = preflight(["-m", "experiment=paper_ep_cpu", "dataset=sst2"])
    assert len(narrowed) == 3 and all("dataset=sst2" in j for j in narrowed)
    with pytest.raises(BdrunError, match=r"this preset is a sweep over attack, dataset: run it with bdrun -m"):
        preflight(["experiment=paper_ep_cpu"])
    assert preflight(["experiment=paper_ep_cpu", "attack=ep", "dataset=sst2"])  # one of its jobs


def test_a_preset_may_set_top_level_keys() -> None:
    assert composed("paper_gradient_control_cpu").clean is False  # LFR needs no clean reference


def test_cpu_sizes_give_a_dataset_its_own_budget_and_the_command_line_still_wins() -> None:
    # Hate speech at 2,000 rows for one epoch collapses to "not hate" (docs/papers.md): it gets all its rows and two
    # epochs; every other dataset keeps the shared budget.
    def sizes(*overrides: str) -> tuple[int | None, int]:
        args = parse_arguments(["experiment=cpu_sizes", *overrides])
        cfg = config_loader(args).load_configuration("config", ["experiment=cpu_sizes", *overrides], RunMode.RUN)
        return cfg.dataset.max_samples.train, cfg.trainer.epochs

    assert sizes("dataset=sst2") == (2000, 1)
    assert sizes("dataset=hate_speech") == (7074, 2)
    assert sizes("dataset=hate_speech", "trainer.epochs=3", "dataset.max_samples.train=500") == (500, 3)


def test_a_preset_sweep_runs_as_declared_and_the_summary_has_its_rows(tmp_path: Path) -> None:
    # paper_meft_cpu sweeps attack x defense; fixing the attack leaves its four defenses, meft_training included.
    result = run_cli(["-m", "experiment=paper_meft_cpu", "attack=badnets_cf", *TINY, "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = find_jobs([tmp_path / "sweep"])
    assert sorted(j.value("defense") for j in jobs) == ["fine_tuning", "meft", "meft_training", "none"]
    assert all(j.status == "completed" for j in jobs)
    summary = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 4
