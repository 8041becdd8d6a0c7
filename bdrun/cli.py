"""The ``bdrun`` command: a Hydra app over ``conf/`` that runs one experiment per job.

Errors in the user's input (an unknown group choice, a knob out of range, a missing data folder, a bad label)
print one line naming the problem and the fix and exit with status 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bdrun.errors import BdrunError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def fail(message: str) -> None:
    print(f"bdrun: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_group_choices(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Reject ``group=choice`` overrides that name no file in ``conf/<group>/``, in one line.

    Hydra would report these too, over several lines; sweep lists (``attack=badnets,ep``) are checked per item.
    """
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~").split("@")[0]
        folder = conf_dir / group
        if not folder.is_dir() or "(" in value:
            continue
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice != "null" and choice not in choices:
                fail(f"unknown {group} '{choice}'; choose one of: {', '.join(choices)}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    # Heavy imports (torch, transformers) happen here, after Hydra has parsed the command line.
    from bdrun.pipeline import config_tags, parse_experiment, run
    from bdrun.tracking import open_tracker

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    print(f"run dir: {run_dir}", flush=True)
    try:
        experiment = parse_experiment(cfg)
        with open_tracker(cfg, run_dir, config_tags(cfg)) as tracker:
            report = run(experiment, run_dir, tracker)
    except BdrunError as err:
        fail(str(err))
    # Returned to Hydra's sweepers (e.g. an Optuna sweep that maximises ASR).
    return next(report[role] for role in ("purified", "backdoored", "clean") if role in report).get("asr")


def main() -> None:
    if not CONF_DIR.is_dir():
        fail(f"config folder {CONF_DIR} is missing; install bdrun from a source checkout with pip install -e .")
    check_group_choices(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
