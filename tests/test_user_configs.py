"""User configs outside the repository (Hydra's search path) and an installed wheel that carries ``conf/``."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from bdrun.errors import BdrunError
from bdrun.preflight import compose, preflight
from tests.conftest import REPO, run_cli

# A dataset config only the user has: three labels and columns of its own, so that its values are recognisable.
USER_DATASET = """\
name: my_topics
format: tsv
location: my_topics
files: {train: [train.tsv], dev: [dev.tsv], test: [test.tsv]}
text_column: text
label_column: topic
num_labels: 3
"""


@pytest.fixture
def user_conf(tmp_path: Path) -> Path:
    folder = tmp_path / "my_conf"
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / "my_topics.yaml").write_text(USER_DATASET)
    return folder


@pytest.mark.parametrize("how", ["hydra.searchpath", "--config-dir"])
def test_a_dataset_config_on_the_search_path_is_accepted_and_used(user_conf: Path, how: str) -> None:
    if how == "hydra.searchpath":
        args = ["--cfg", "job", f"hydra.searchpath=[file://{user_conf}]", "dataset=my_topics", "logger=none"]
    else:
        args = ["--config-dir", str(user_conf), "--cfg", "job", "dataset=my_topics", "logger=none"]
    result = run_cli(args, user_conf.parent)
    assert result.returncode == 0, result.stderr
    assert "name: my_topics" in result.stdout and "label_column: topic" in result.stdout
    assert "num_labels: 3" in result.stdout


def test_the_full_preflight_accepts_the_user_dataset_and_checks_labels_against_it(user_conf: Path) -> None:
    searchpath = f"hydra.searchpath=[file://{user_conf}]"
    preflight([searchpath, "dataset=my_topics", "attack.target_label=2", "logger=none"])  # 3 labels: 2 fits
    with pytest.raises(BdrunError, match=r"attack.target_label=3 but the dataset has 3 labels"):
        preflight([searchpath, "dataset=my_topics", "attack.target_label=3", "logger=none"])


def test_without_the_search_path_the_user_choice_is_unknown_and_with_it_it_is_listed(user_conf: Path) -> None:
    with pytest.raises(BdrunError, match=r"unknown dataset 'my_topic'; choose one of: .*sst2"):
        preflight(["dataset=my_topic"])
    with pytest.raises(BdrunError, match=r"unknown dataset 'my_topics'"):
        preflight(["dataset=my_topics"])
    with pytest.raises(BdrunError, match=r"unknown dataset 'my_topic'; choose one of: .*my_topics"):
        preflight([f"hydra.searchpath=[file://{user_conf}]", "dataset=my_topic"])


def test_a_sweep_over_a_user_choice_and_a_repository_choice_is_accepted(user_conf: Path) -> None:
    preflight(["-m", f"hydra.searchpath=[file://{user_conf}]", "dataset=my_topics,sst2", "logger=none"])
    with pytest.raises(BdrunError, match="unknown dataset 'nope'"):
        preflight(["-m", f"hydra.searchpath=[file://{user_conf}]", "dataset=my_topics,nope"])


def test_every_group_accepts_a_user_choice(tmp_path: Path) -> None:
    """Not only datasets: a user attack preset that extends the repository's BadNets is found the same way."""
    from bdrun.configs import config_loader, parse_arguments

    folder = tmp_path / "conf" / "attack"
    folder.mkdir(parents=True)
    (folder / "my_badnets.yaml").write_text("defaults:\n  - badnets\n  - _self_\n\npoison_rate: 0.3\n")
    args = parse_arguments(["--config-dir", str(tmp_path / "conf"), "attack=my_badnets"])
    cfg = compose(config_loader(args), "config", args.overrides)
    assert cfg.attack.name == "badnets" and cfg.attack.poison_rate == 0.3


@pytest.mark.install
def test_a_wheel_installed_outside_the_repository_runs_help(tmp_path: Path) -> None:
    """``pip install .`` (not editable) gives a working ``bdrun`` with its configs (about 10-30 s here).

    The wheel is built offline from a copy of the sources and installed into a fresh venv that reuses this
    interpreter's dependencies through a path file (not its site hooks, so the editable bdrun there stays out).
    """
    source = _mkdir(tmp_path / "src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "bdrun", source / "bdrun", ignore=ignore)
    shutil.copytree(REPO / "conf", source / "conf", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_NO_INDEX"] = "1"

    def run(*command: str | Path, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source)
    wheel = next((tmp_path / "dist").glob("bdrun-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv)
    python = venv / "bin" / "python"
    own_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (own_site / "shared_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(*pip, "--python", python, "install", "--no-deps", wheel)

    outside = _mkdir(tmp_path / "elsewhere")
    where = run(python, "-c", "import bdrun.configs as c; print(c.CONF_DIR)", cwd=outside).stdout.strip()
    assert Path(where) == own_site / "bdrun" / "conf", where
    result = run(venv / "bin" / "bdrun", "--help", cwd=outside)
    assert "attack: addsent, badnets" in result.stdout
    assert "fine_mixing" in result.stdout  # the defense group, listed from the packaged conf/
    unknown = subprocess.run(
        [str(venv / "bin" / "bdrun"), "attack=nope"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and unknown.stderr.startswith("bdrun: error: unknown attack 'nope'")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_sweep_jobs_folder_name_stays_short_and_unique_however_long_its_overrides() -> None:
    """hydra.sweep.subdir goes through bdrun's resolver: a long command line no longer breaks a multirun."""
    import yaml
    from omegaconf import OmegaConf

    from bdrun.configs import CONF_DIR, JOB_DIRNAME_BYTES

    subdir = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["hydra"]["sweep"]["subdir"]

    def folder(num: int, overrides: str) -> str:
        job = {"hydra": {"job": {"num": num, "override_dirname": overrides}, "sweep": {"subdir": subdir}}}
        return OmegaConf.create(job).hydra.sweep.subdir

    long = ",".join(f"attack.knob_{i}=value_{i}" for i in range(30))
    assert len(folder(0, long).encode()) <= 2 + JOB_DIRNAME_BYTES < 255
    assert folder(0, long) != folder(0, long.replace("value_29", "value_30"))  # the hash tells them apart
    assert folder(1, "attack=ep,seed=2") == "1_attack=ep,seed=2"  # short names stay as Hydra makes them
