"""Experiment trackers: W&B (offline by default, ``wandb sync`` later) or none.

The task wrapper opens the tracker with :func:`open_tracker`, which always finishes the run, with a failing
exit code when the job raised, so a crashed job still leaves a complete (offline) W&B run behind.

While a tracker is open it is also the *active* tracker: the training loop reports every optimizer step
(loss, learning rate) through :func:`log_step` without the tracker being passed down through every stage,
attack and defense (they all train through the one loop). Steps appear as ``train/<stage>/loss`` and
``train/<stage>/lr`` against their own ``train/<stage>/step`` axis; a stage read from the cache logs no steps.

``mode=online`` never costs the run: W&B's init gives up after ``logger.init_timeout`` seconds (no network,
no key), bdrun prints one warning line and logs offline instead (``wandb sync`` later).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import sys
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
    group: str | None = None  # null: in a sweep, the sweep folder (multirun/<date>/<time>), so a sweep is a group
    tags: list[str] = dataclasses.field(default_factory=list)
    init_timeout: float = 30.0  # seconds W&B may take to start an online run before bdrun falls back to offline

    def __post_init__(self) -> None:
        check(
            self.mode in ("offline", "online", "disabled"),
            f"logger.mode={self.mode} is not supported; use offline, online or disabled",
        )
        check(self.init_timeout > 0, f"logger.init_timeout={self.init_timeout} must be > 0 seconds")


def init_wandb(mode: str, init_timeout: float = 30.0, **kwargs: Any) -> Any:
    """``wandb.init`` that never fails for want of a network or key: an online init that errors or times out
    is retried offline after one warning line. The WANDB_MODE environment variable, when set, wins."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or mode
    settings = {"console": "off", "silent": True, "init_timeout": init_timeout}
    if mode == "online":
        before = set(Path(kwargs.get("dir") or ".", "wandb").glob("run-*"))
        try:
            # W&B's own messages go to a buffer: the one line below says what happened. A terminal login prompt
            # waits at most init_timeout too.
            online = wandb.Settings(**settings, login_timeout=init_timeout)
            with contextlib.redirect_stderr(io.StringIO()):
                return wandb.init(mode="online", settings=online, **kwargs)
        except Exception as err:
            message = (str(err).strip().splitlines() or [""])[0]
            reason = type(err).__name__ + (f": {message}" if message and message != "<no message>" else "")
            where = kwargs.get("dir", ".")
            print(
                f"bdrun: warning: W&B online init failed ({reason}); logging offline under {where} "
                "(upload later with wandb sync)",
                file=sys.stderr,
                flush=True,
            )
            for partial in set(Path(kwargs.get("dir") or ".", "wandb").glob("run-*")) - before:
                shutil.rmtree(partial, ignore_errors=True)  # the failed online run's empty folder: nothing to sync
        mode = "offline"
    with _env(WANDB_MODE=mode):  # the environment must not send the retry online again
        return wandb.init(mode=mode, settings=wandb.Settings(**settings), **kwargs)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Tracker:
    def start(self, config: DictConfig, run_dir: Path, tags: list[str]) -> None:
        pass

    def log(self, metrics: dict[str, Any]) -> None:
        pass

    def log_step(self, stage: str, step: int, metrics: dict[str, float]) -> None:
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
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = init_wandb(
            self.config.mode,
            self.config.init_timeout,
            project=self.config.project,
            entity=self.config.entity,
            dir=str(run_dir),
            group=self.config.group or sweep_group(),
            tags=[*self.config.tags, *tags],
            config=OmegaConf.to_container(config, resolve=True),
        )
        self.stages: set[str] = set()

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)
            self.run.summary.update(metrics)

    def log_step(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if self.run is None:
            return
        if stage not in self.stages:  # each stage's curves get their own step axis
            self.stages.add(stage)
            self.run.define_metric(f"train/{stage}/step")
            self.run.define_metric(f"train/{stage}/*", step_metric=f"train/{stage}/step")
        self.run.log({f"train/{stage}/step": step, **{f"train/{stage}/{k}": v for k, v in metrics.items()}})

    def finish(self, exit_code: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def sweep_group() -> str | None:
    """In a multirun, the sweep folder below ``multirun/`` (``2026-05-01/12-00-00``), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return group_name(str(HydraConfig.get().sweep.dir))


def group_name(sweep_dir: str) -> str:
    """``.../multirun/2026-05-01/12-00-00`` -> ``2026-05-01/12-00-00`` (the time alone repeats across days);
    a sweep folder elsewhere (``hydra.sweep.dir=/x/bench``) -> its name, ``bench``."""
    parts = Path(sweep_dir).parts
    return "/".join(parts[parts.index("multirun") + 1 :]) if "multirun" in parts[:-1] else parts[-1]


_active: list[Tracker] = []


def log_step(desc: str, step: int, metrics: dict[str, float]) -> None:
    """Report one training step to the open tracker, if any; the stage name comes from the loop's ``desc``
    (``train clean`` -> ``clean``, ``meft max-entropy`` -> ``meft_max-entropy``)."""
    if _active:
        stage = desc.removeprefix("train ").strip().replace(" ", "_")
        _active[-1].log_step(stage, step, metrics)


@contextlib.contextmanager
def open_tracker(config: DictConfig, run_dir: Path, tags: list[str]) -> Iterator[Tracker]:
    tracker: Tracker = TRACKERS.build(config.logger)
    tracker.start(config, run_dir, tags)
    _active.append(tracker)
    exit_code = 1
    try:
        yield tracker
        exit_code = 0
    finally:
        _active.remove(tracker)
        tracker.finish(exit_code)
