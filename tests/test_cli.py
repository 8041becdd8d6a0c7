"""The real ``bdrun`` command: one-line errors, --help, sweeps that reuse stages (SIGKILL and resume: test_faults)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bdrun.cli import CONF_DIR
from tests.conftest import TINY, run_cli


def assert_one_clear_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bdrun: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_group_choice(tmp_path: Path) -> None:
    result = run_cli(["attack=nonexistent"], tmp_path)
    assert_one_clear_line(result, "unknown attack 'nonexistent'", "badnets")


def test_unknown_choice_inside_a_sweep(tmp_path: Path) -> None:
    result = run_cli(["-m", "defense=none,fine_tunin"], tmp_path)
    assert_one_clear_line(result, "unknown defense 'fine_tunin'")


def test_out_of_range_knob(tmp_path: Path) -> None:
    result = run_cli(["attack.poison_rate=1.5", "logger=none"], tmp_path)
    assert_one_clear_line(result, "attack.poison_rate=1.5", "[0, 1]")


def test_missing_data_directory(tmp_path: Path) -> None:
    result = run_cli(["dataset=sst2_glue", f"paths.data_dir={tmp_path}/missing", "logger=none"], tmp_path)
    assert_one_clear_line(result, "does not exist", "paths.data_dir")


def test_bad_label_in_a_data_file(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "sst2_glue"
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n")
    result = run_cli(["dataset=sst2_glue", f"paths.data_dir={tmp_path}/data", "logger=none"], tmp_path)
    assert_one_clear_line(result, "train.tsv line 3", "label 2 is outside 0..1")


def test_help_lists_every_group_with_its_choices(tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0
    groups = [folder for folder in CONF_DIR.iterdir() if folder.is_dir() and folder.name != "hydra"]
    assert {g.name for g in groups} >= {"attack", "defense", "optimizer", "model", "dataset", "logger"}
    for group in groups:
        choices = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        assert f"{group.name}: {choices}" in result.stdout
    attacks = (
        "addsent, badnets, badnets_cf, ep, ep_data_free, gradient_control, gradnorm, lwp, none, ripple, surgery, "
        "surgery_contrast, syntactic"
    )
    assert f"attack: {attacks}" in result.stdout


def test_defense_sweep_poisons_once(tmp_path: Path) -> None:
    result = run_cli(["-m", *TINY, "defense=none,fine_tuning"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert log.count("running poison: attack=badnets") == 1
    assert log.count("reused poison: attack=badnets") == 1
    assert log.count("running train: clean fine-tuning") == 1
    reports = sorted((tmp_path / "outputs" / "multirun").rglob("metrics.json"))
    assert len(reports) == 2
    first, second = (json.loads(p.read_text()) for p in reports)
    assert first["backdoored"] == second["backdoored"] and "purified" in second


@pytest.mark.parametrize("mode", ["offline"])
def test_wandb_offline_run_is_written_and_finished(tmp_path: Path, mode: str) -> None:
    args = [a for a in TINY if a != "logger=none"] + ["attack=none", "logger=wandb"]
    result = run_cli(args, tmp_path, env={"WANDB_MODE": mode})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "runs").rglob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))


def test_parallel_jobs_on_one_machine_share_its_cores() -> None:
    from bdrun.cli import threads_per_job

    assert threads_per_job(None, 16) is None  # basic launcher: one job at a time, torch's default
    assert threads_per_job(1, 16) is None
    assert threads_per_job(4, 16) == 4
    assert threads_per_job(3, 2) == 1  # more jobs than cores: one thread each, never zero
    assert threads_per_job(-1, 8) == 1  # joblib's -1: a job per core
