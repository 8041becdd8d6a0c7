"""Shared fixtures: composing the real Hydra config with tiny-model overrides, and locating shared data."""

from __future__ import annotations

import os

# Under pytest-xdist each worker is a process of its own: give each its share of the cores (one thread each on
# 2 cores), before torch is imported, since torch processes that each use every core slow each other down many
# times over. Subprocesses (the real ``bdrun`` command) inherit the setting. A user's own setting wins.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_share)
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bdrun.cli import CONF_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("BDRUN_DATA_DIR", REPO.parent / "shared" / "data")).resolve()

# A 2-layer MiniLM on a few dozen short sentences: a whole pipeline in seconds on a CPU.
TINY = [
    "model.num_layers=2",
    "model.max_length=32",
    "dataset.max_samples={train:96,dev:32,test:64}",
    "trainer.epochs=1",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=64",
    "optimizer.lr=1e-4",
    "logger=none",
]


def compose_config(overrides: list[str], cache_dir: Path | None = None) -> DictConfig:
    extra = [f"paths.cache_dir={cache_dir}"] if cache_dir else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *extra, *overrides])


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``bdrun`` command (same interpreter) in ``cwd``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, "-c", "from bdrun.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set BDRUN_DATA_DIR)")
    return SHARED_DATA
