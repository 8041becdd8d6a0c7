"""Faults (issue 25, section 4): a run that dies mid-stage loses nothing already finished, through the real command.

A training stage (central, PET) killed with SIGKILL after a checkpoint, and a federated stage killed after a round
checkpoint, each say ``resuming`` on the rerun, continue from that checkpoint and end with the same weights and
metrics as a run that was never killed. Two identical commands started at once on one cache build each stage once:
the other waits on the stage's lock and reuses the result. The in-process variants (every optimizer, bucketing,
Dim-Krum's state) are ``tests/test_training.py`` and ``tests/federated/test_federation.py``.

Cheap by construction: the killed job dies at the rename that completes its first checkpoint
(``tests.conftest.sigkill_cli_when``), so the smallest stage with work after that checkpoint is enough; TINY's
model is the small random BERT (resuming is a property of the loop, not of pre-trained weights); ``attack=none``
leaves one training stage and its evaluation. Such a model predicts one class, so equal CACC would prove little: the
finished stages' weight files are compared byte for byte.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, cli_command, cli_env, compose_config, run_cli, sigkill_cli_when

WEIGHTS = "model.safetensors"


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def finished(folder: Path, args: list[str]) -> tuple[dict, str]:
    """Run ``bdrun args`` in ``folder`` (cache ``folder/cache``) to the end; return its metrics.json and console."""
    folder.mkdir(exist_ok=True)
    result = run_cli([*args, "paths.cache_dir=cache"], folder)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = only(sorted((folder / "outputs" / "runs").rglob("metrics.json")))
    return json.loads(metrics.read_text()), result.stdout + result.stderr


def trained(folder: Path) -> tuple[bytes, dict]:
    """The finished train stage's weights file and meta.json (identical bytes: identical tensors, same order)."""
    stage = only(sorted((folder / "cache" / "train").glob(f"*/{WEIGHTS}"))).parent
    return (stage / WEIGHTS).read_bytes(), json.loads((stage / "meta.json").read_text())


def kill_then_rerun(tmp_path: Path, args: list[str], checkpoints: str, label: str) -> tuple[dict, dict, str]:
    """SIGKILL ``bdrun args`` when its train stage completes its first file matching ``checkpoints`` (a glob under
    the stage's cache folder), check that the stage had not completed, rerun the command, check that the rerun
    resumed and ends as a run that was never killed. Returns the rerun's metrics, its train stage's meta.json and
    the checkpoint the kill left behind (where the rerun starts)."""
    run = tmp_path / "killed"
    run.mkdir()
    sigkill_cli_when([*args, "paths.cache_dir=cache"], run, f"cache/train/{checkpoints}")
    assert not list((run / "cache" / "train").glob(f"*/{WEIGHTS}")), "killed after the stage completed"
    left = only(sorted((run / "cache" / "train").glob(checkpoints))).name

    resumed, log = finished(run, args)
    assert f"resuming train: {label}" in log
    left_over = [p.name for p in (run / "cache" / "train").glob(".*") if not p.name.endswith(".lock")]
    assert not left_over, "the killed job's partial folder, or the completed stage's work folder, is still there"
    reference, _ = finished(tmp_path / "never-killed", args)
    assert resumed["clean"] == reference["clean"]
    weights, meta = trained(run)
    assert weights == trained(tmp_path / "never-killed")[0]
    return resumed, meta, left


def test_a_killed_central_training_resumes_from_its_checkpoint_and_ends_as_an_unkilled_one(tmp_path: Path) -> None:
    # 6 steps of 16 samples, a checkpoint every 2: killed at the first one, 4 steps still ahead.
    args = [*TINY, "attack=none", "trainer.checkpoint_every=2"]
    _, meta, left = kill_then_rerun(tmp_path, args, ".*.work/*/step-*", "clean fine-tuning")
    assert left == "step-00000002" and meta["train"]["resumed_from_step"] == 2


def test_a_killed_pet_stage_resumes_from_its_checkpoint_and_ends_as_an_unkilled_one(tmp_path: Path) -> None:
    # LoRA (its dropout draws from the restored RNG), 6 steps, killed at the checkpoint after step 2.
    args = [*TINY, "attack=none", "model.tuning=lora", "trainer.checkpoint_every=2"]
    _, meta, left = kill_then_rerun(tmp_path, args, ".*.work/*/step-*", "clean fine-tuning")
    assert left == "step-00000002" and meta["train"]["resumed_from_step"] == 2


def test_a_killed_federation_resumes_at_its_last_finished_round_and_ends_as_an_unkilled_one(tmp_path: Path) -> None:
    # 2 honest clients of 16 samples (one local step each), 2 rounds: killed once round 1 is checkpointed. FedAvg
    # keeps no state across rounds; Dim-Krum's is resumed in tests/federated/test_federation.py.
    args = [
        *TINY,
        "attack=none",
        "federated=iid",
        "federated.clients=2",
        "federated.rounds=2",
        "federated.eval_samples=16",
        "dataset.max_samples.train=32",
    ]
    resumed, meta, left = kill_then_rerun(tmp_path, args, ".*.work/federation/round-*", "clean FedAvg federation")
    assert left == "round-0001" and meta["federation"]["resumed_from_round"] == 1
    assert [r["round"] for r in resumed["federation"]["clean"]["rounds"]] == [1, 2]


def train_lock(overrides: list[str], cache: Path) -> Path:
    """The lock file of the train stage that ``bdrun *TINY *overrides`` builds (its key, computed as the command
    does)."""
    from bdrun.data import load_splits
    from bdrun.pipeline import make_stages, parse_experiment

    exp = parse_experiment(compose_config(overrides, cache_dir=cache))
    key = make_stages(exp, load_splits(exp.dataset, exp.data_dir)).train_key()
    return cache / "train" / f".{key}.lock"


def blocked_on(lock: Path) -> int:
    """How many processes wait for ``lock`` (Linux's /proc/locks marks a blocked request with ``->``)."""
    inode = f":{os.stat(lock).st_ino} "
    return sum("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux's /proc/locks to see a blocked job")
def test_two_identical_commands_at_once_build_each_stage_once_and_agree(tmp_path: Path) -> None:
    """Started together on one cache: for each stage one command builds it, the other waits on its lock and then
    reuses the result. The test holds the train stage's lock until both commands wait on it, so the two really
    race for the same missing stage, however the machine schedules them. Each command runs in a folder of its
    own (one shared cache), so that each keeps its own report."""
    cache = tmp_path / "cache"
    overrides = ["attack=none"]
    lock = train_lock(overrides, cache)
    lock.parent.mkdir(parents=True)
    jobs, logs = [], [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        with lock.open("w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            for log in logs:
                (tmp_path / log.stem).mkdir()
                # To a file, not a pipe: a job blocked on a full pipe while holding a lock would stall the other.
                with log.open("w") as out:
                    command = cli_command([*TINY, *overrides, f"paths.cache_dir={cache}"])
                    jobs.append(
                        subprocess.Popen(command, cwd=tmp_path / log.stem, env=cli_env(), stdout=out, stderr=out)
                    )
            deadline = time.monotonic() + 300
            while blocked_on(lock) < 2:
                assert time.monotonic() < deadline and all(job.poll() is None for job in jobs), "a job never waited"
                time.sleep(0.05)
        codes = [job.wait(timeout=600) for job in jobs]
    finally:
        for job in jobs:  # only on a failure above: leave no job running
            if job.poll() is None:
                job.kill()
                job.wait()
    output = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(text[-2000:] for text in output)
    both = "".join(output)
    for stage in ("train: clean fine-tuning", "evaluate: clean model"):
        assert both.count(f"running {stage}") == 1, both
        assert both.count(f"reused {stage}") == 1, both
    assert both.count("reused train: clean fine-tuning (built by a concurrent job") == 1  # it waited for it
    assert "resuming" not in both
    first, second = (json.loads(only(sorted((tmp_path / log.stem).rglob("metrics.json"))).read_text()) for log in logs)
    assert first["clean"] == second["clean"] and first["stages"]["clean"]["key"] == second["stages"]["clean"]["key"]
    assert sorted(report["stages"]["clean"]["reused"] for report in (first, second)) == [False, True]
    assert not [p.name for p in cache.glob("*/.*") if not p.name.endswith(".lock")], "a partial or work folder left"
