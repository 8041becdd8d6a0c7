"""The content-addressed stage cache: ``<root>/<stage>/<key>/``.

A stage's key is a hash of exactly the config that determines its output plus the keys of its inputs, so a
rerun, or a sweep that changes only later stages, finds earlier outputs and skips them. Outputs are built in a
temporary folder and renamed into place, so a killed run never leaves a folder that looks complete (the next
build of that stage removes the temporary folder it left). Two jobs that need the same missing stage (a joblib
or SLURM sweep) serialise on a lock file; the second one then finds the finished folder and reuses it.
Resumable work in progress (training checkpoints) lives in a ``.<key>.work`` folder that survives a crash and is
removed once the stage is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bdrun.errors import BdrunError
from bdrun.progress import console

META = "meta.json"


def stage_key(stage: str, **parts: Any) -> str:
    """A short, stable hash of a stage name and the (JSON-able) config parts that determine it."""
    blob = json.dumps({"stage": stage, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path
    reused: bool

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text())


def check_root(root: Path) -> None:
    """Create the cache folder and probe that a folder can be made in it, before the first stage: a path under
    a file, a read-only mount or a virtual file system (``/proc``) would otherwise end the first stage in a
    traceback from ``mkdir``. The probe is removed again; the folder itself stays, as the stages need it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=root, prefix=".probe-").cleanup()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BdrunError(
            f"paths.cache_dir={root} cannot be used ({reason}: {err.filename or root}); point paths.cache_dir "
            "(or BDRUN_CACHE_DIR) at a folder you can write"
        ) from None


class StageCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / META).is_file()

    @contextlib.contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        lock_path = self.root / stage / f".{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get_or_build(
        self,
        stage: str,
        key: str,
        build: Callable[[Path, Path], dict[str, Any]],
        label: str,
    ) -> Artifact:
        """Return the stage's artifact, building it with ``build(out_dir, work_dir) -> meta`` if missing."""
        final = self.path(stage, key)
        if self.is_complete(stage, key):
            console.print(f"[green]reused[/] {label} [dim]({final})[/]")
            return Artifact(stage, key, final, reused=True)
        with self._lock(stage, key):
            if self.is_complete(stage, key):  # another job built it while we waited
                console.print(f"[green]reused[/] {label} [dim](built by a concurrent job, {final})[/]")
                return Artifact(stage, key, final, reused=True)
            work = final.parent / f".{key}.work"
            # Under the lock nobody else builds this key, so any partial folder of it is a killed job's
            # half-written output: never trusted (it is not the final folder), and removed here, not left to pile up.
            for stale in final.parent.glob(f".{key}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            partial = final.parent / f".{key}.partial-{os.getpid()}"
            partial.mkdir(parents=True)
            resuming = work.is_dir() and any(work.iterdir())
            console.print(f"[yellow]{'resuming' if resuming else 'running'}[/] {label}")
            started = time.time()
            meta = build(partial, work)
            meta = {"stage": stage, "key": key, "seconds": round(time.time() - started, 2), **meta}
            (partial / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            shutil.rmtree(final, ignore_errors=True)  # a stale, incomplete folder (no meta.json)
            partial.rename(final)
            shutil.rmtree(work, ignore_errors=True)
        return Artifact(stage, key, final, reused=False)
