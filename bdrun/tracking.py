"""Experiment trackers: W&B (offline by default, ``wandb sync`` later) or none.

The task wrapper opens the tracker with :func:`open_tracker`, which always finishes the run, with a failing
exit code when the job raised, so a crashed job still leaves a complete (offline) W&B run behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bdrun.errors import check
from bdrun.registry import Registry

TRACKERS: Registry = Registry("logger")


@dataclasses.dataclass
class TrackerConfig:
    name: str


@dataclasses.dataclass
class WandbConfig(TrackerConfig):
    project: str = "bdrun"
    entity: str | None = None
    # offline: write the run under the run directory, upload later with `wandb sync`. The WANDB_MODE
    # environment variable, when set, wins (WANDB_MODE=online to log live).
    mode: str = "offline"
    group: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        check(
            self.mode in ("offline", "online", "disabled"),
            f"logger.mode={self.mode} is not supported; use offline, online or disabled",
        )


class Tracker:
    def start(self, config: DictConfig, run_dir: Path, tags: list[str]) -> None:
        pass

    def log(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass


@TRACKERS.register("none", TrackerConfig)
class NoTracker(Tracker):
    def __init__(self, config: TrackerConfig) -> None:
        self.config = config


@TRACKERS.register("wandb", WandbConfig)
class WandbTracker(Tracker):
    def __init__(self, config: WandbConfig) -> None:
        self.config = config
        self.run = None

    def start(self, config: DictConfig, run_dir: Path, tags: list[str]) -> None:
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.config.project,
            entity=self.config.entity,
            mode=os.environ.get("WANDB_MODE", self.config.mode),
            dir=str(run_dir),
            group=self.config.group,
            tags=[*self.config.tags, *tags],
            config=OmegaConf.to_container(config, resolve=True),
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)
            self.run.summary.update(metrics)

    def finish(self, exit_code: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


@contextlib.contextmanager
def open_tracker(config: DictConfig, run_dir: Path, tags: list[str]) -> Iterator[Tracker]:
    tracker: Tracker = TRACKERS.build(config.logger)
    tracker.start(config, run_dir, tags)
    exit_code = 1
    try:
        yield tracker
        exit_code = 0
    finally:
        tracker.finish(exit_code)
