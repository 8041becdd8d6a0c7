"""The ``bdrun`` command: a Hydra app over ``conf/`` that runs one experiment per job.

Errors in the user's input (an unknown group choice, a knob out of range, a missing data folder, a bad label)
print one line naming the problem and the fix and exit with status 2; no traceback. :mod:`bdrun.preflight`
checks every job's config before Hydra starts any; the configs are found as :mod:`bdrun.configs` describes.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bdrun.configs import CONF_DIR, CONFIG_NAME
from bdrun.errors import BdrunError
from bdrun.results import one_line, write_status


def fail(message: str) -> None:
    print(f"bdrun: error: {message}", file=sys.stderr)
    sys.exit(2)


def threads_per_job(n_jobs: object, cpus: int) -> int | None:
    """CPU threads for each of ``n_jobs`` jobs that a launcher runs at once on one machine (joblib's ``n_jobs``;
    -1 = one per core), or None to leave torch's default (one job at a time).

    Each torch process uses every core by default; several of them on the same cores spin against each other
    (measured here: a federated round took 15 minutes instead of 40 s with three 2-thread processes on 2 cores)."""
    if not isinstance(n_jobs, int) or n_jobs in (0, 1):
        return None
    parallel = cpus if n_jobs < 0 else min(n_jobs, cpus)
    return max(1, cpus // parallel)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> float | None:
    # Heavy imports (torch, transformers) happen here, after Hydra has parsed the command line.
    from bdrun.allocator import keep_freed_memory
    from bdrun.pipeline import config_tags, parse_experiment, run
    from bdrun.tracking import open_tracker

    keep_freed_memory()  # per job: a joblib or SLURM worker is a process of its own

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    print(f"run dir: {run_dir}", flush=True)
    threads = threads_per_job(OmegaConf.select(HydraConfig.get(), "launcher.n_jobs"), os.cpu_count() or 1)
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:  # the user's own setting wins
        import torch

        torch.set_num_threads(threads)
    try:
        experiment = parse_experiment(cfg)
        with open_tracker(cfg, run_dir, config_tags(cfg)) as tracker:
            report = run(experiment, run_dir, tracker)
    except Exception as err:
        # Every job records its outcome (status.json) for the sweep summary. In a sweep a failed job is reported
        # in one line and the sweep goes on; the summary lists it and the sweep exits 1.
        write_status(run_dir, err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            print(f"bdrun: error: job {run_dir.name} failed: {one_line(err)}", file=sys.stderr)
            if not isinstance(err, BdrunError):
                traceback.print_exception(err)
            return None
        if isinstance(err, BdrunError):
            fail(str(err))
        raise
    write_status(run_dir)
    # Returned to Hydra's sweepers (e.g. an Optuna sweep that maximises ASR).
    return next(report[role] for role in ("purified", "backdoored", "clean") if role in report).get("asr")


def main() -> None:
    from bdrun.preflight import preflight

    if not CONF_DIR.is_dir():
        fail(f"config folder {CONF_DIR} is missing; reinstall bdrun (pip install .) or run it from a source checkout")
    try:
        preflight(sys.argv[1:])  # every input check that needs no data, for every job, before Hydra starts one
    except BdrunError as err:
        fail(str(err))
    hydra_main()


if __name__ == "__main__":
    main()
