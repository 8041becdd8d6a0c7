"""Every check of the user's input that needs no data, run on the command line before Hydra starts any job.

A mistake must cost one line and no work: not a traceback, not a finished training stage followed by a crash.
:func:`preflight` therefore composes the config of every job the command line asks for (each combination of a
sweep, up to :data:`MAX_JOBS_CHECKED`) with Hydra's own loader and search path, and validates it the way a job
will: every group choice exists on the search path, every component's knobs parse, every top-level key is one
a component reads, label indices fit the dataset's declared label count, and, for a model on this machine,
knobs that need only its config and module names (``model.num_layers``, ``model.lora_targets``, a defense's
layer count) fit it. Checks that need the data itself (a label outside the range, a file that is not text, a
training split of one class) and the cache folder's use run when the job loads its data, before its first stage.

Choices made here (Hydra is silent on them): options such as ``--help``/``--info`` skip the checks (they start
no job); ``--cfg`` only composes the configs (it prints a config, it does not run one); an ``interval(...)``
sweep (Optuna) is checked at the group's default value, since its values are only known to the sweeper.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from bdrun.configs import CONFIG_NAME, config_loader, config_repository, group_options, parse_arguments
from bdrun.errors import BdrunError, check

MAX_JOBS_CHECKED = 256  # composing one job costs ~50 ms; larger sweeps are checked on their first jobs
# Hydra's mutually exclusive modes (it raises a ValueError with a traceback for two of them).
MODES = {
    "--run": "run",
    "--multirun": "multirun",
    "--cfg": "cfg",
    "--info": "info",
    "--shell-completion": "shell_completion",
}
# Top-level nodes that a component parses against its own dataclass, which rejects unknown keys itself.
SCHEMA_NODES = ("model", "dataset", "attack", "defense", "optimizer", "trainer", "logger", "federated")

T = TypeVar("T")


def condensed(err: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages, reduced to their meaningful lines joined on one line (for
    config errors; a failed job's status line is :func:`bdrun.results.one_line`)."""
    lines = []
    for raw in str(err).splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):  # Hydra's listing of every source: many lines, little news
            break
        if line and not line.startswith(("full_key:", "object_type=", "reference_type=", "Set the environment")):
            lines.append(line.rstrip(".:"))
    if not lines and err.__cause__ is not None:
        return condensed(err.__cause__)
    return "; ".join(lines) or type(err).__name__


def hydra_call(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except (HydraException, OmegaConfBaseException, ValueError) as err:  # Hydra raises ValueError for some input
        raise BdrunError(condensed(err)) from None
    except yaml.YAMLError as err:  # a config file that is not valid YAML
        raise BdrunError(f"a config file is not valid YAML: {condensed(err)}") from None


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise BdrunError(f"cannot parse the override '{err.override}': {condensed(err)}") from None


def override_values(override: Override) -> list[Any] | None:
    """The values an override sets, one per job of a sweep; None when only the sweeper knows them."""
    if override.is_sweep_override():
        if override.is_interval_sweep() or isinstance(override.value(), Glob):
            return None
        return list(override.sweep_string_iterator())
    value = override.value()
    return value if isinstance(value, list) else [value]


def check_group_choices(repo: Any, overrides: list[Override]) -> None:
    """Every ``group=choice`` names a config on the search path (the repository's ``conf/`` and the user's)."""
    for override in overrides:
        if override.is_delete():
            continue
        group = override.key_or_group
        options = group_options(repo, group)
        values = override_values(override)
        if options is None or values is None:
            continue
        for choice in values:
            check(
                choice is not None and choice != "null",
                f"{group}=null is not a choice; pick one of: {', '.join(options)} (~{group} removes an optional group)",
            )
            if str(choice) not in options:
                raise BdrunError(
                    f"unknown {group} '{choice}'; choose one of: {', '.join(options)} "
                    "(or add your own on hydra.searchpath / --config-dir)"
                )


def job_overrides(overrides: list[Override], multirun: bool, raw: list[str]) -> Iterator[list[str]]:
    """The override list of each job Hydra's basic sweeper will launch (just ``raw`` for a single run).

    As the basic sweeper does: one entry per key, a later override of a key replacing an earlier one in its place
    (so the command line replaces a preset's ``hydra.sweeper.params``, which come first)."""
    if not multirun:
        yield raw
        return
    per_key: dict[str, list[str]] = {}
    for override in overrides:
        values = override_values(override) if override.is_sweep_override() else [None]
        if values is None:  # interval sweep: check the default
            per_key.pop(override.get_key_element(), None)
        elif override.is_sweep_override():
            per_key[override.get_key_element()] = [f"{override.get_key_element()}={value}" for value in values]
        else:
            per_key[override.get_key_element()] = [override.input_line or ""]
    for combination in itertools.islice(itertools.product(*per_key.values()), MAX_JOBS_CHECKED):
        yield list(combination)


def preset_sweep(loader: Any, config_name: str, overrides: list[Override], multirun: bool) -> list[Override]:
    """The sweep a preset declares in ``hydra.sweeper.params`` (``conf/experiment/paper_*``), as overrides that
    go before the command line's. Without ``-m`` Hydra would ignore it and run one job at the defaults, so a
    swept key the command line leaves open is an error that says to add ``-m``."""
    run_mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    cfg = hydra_call(loader.load_configuration, config_name, [o.input_line or "" for o in overrides], run_mode)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    given = {o.get_key_element() for o in overrides}
    open_keys = [str(key) for key in params if key not in given]
    if not multirun:
        check(
            not open_keys,
            f"this preset is a sweep over {', '.join(open_keys)}: run it with bdrun -m, "
            "or set those keys to run one of its jobs",
        )
        return []
    return parse_overrides([f"{key}={params[key]}" for key in open_keys])


def compose(loader: Any, config_name: str, overrides: list[str]) -> DictConfig:
    """The job's config as ``hydra_main`` receives it (the ``hydra`` node removed)."""
    cfg = hydra_call(loader.load_configuration, config_name, overrides, RunMode.RUN)
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def check_known_keys(cfg: DictConfig, declared: DictConfig) -> None:
    """A key that no component reads is an error naming it (``+foo=bar`` would otherwise be silently ignored).

    Top-level keys must be declared in conf/config.yaml (or be a config group); nodes without a dataclass of
    their own (``paths``) must keep to the keys their default config declares. The component nodes
    (:data:`SCHEMA_NODES`) are checked by their dataclasses when parsed.
    """
    for key in declared:
        check(key in cfg, f"config key '{key}' is missing (removed with ~{key}?); every run needs it, set {key}=...")
    for key in cfg:
        check(
            key in declared,
            f"unknown config key '{key}': no bdrun component reads it; remove it or fix its spelling "
            f"(top-level keys: {', '.join(str(k) for k in declared)})",
        )
        if key in SCHEMA_NODES or not OmegaConf.is_dict(cfg[key]) or not OmegaConf.is_dict(declared[key]):
            continue
        for sub in cfg[key]:
            check(
                sub in declared[key],
                f"unknown config key '{key}.{sub}': no bdrun component reads it; "
                f"{key} has {', '.join(str(k) for k in declared[key])}",
            )


def validate(cfg: DictConfig, declared: DictConfig) -> None:
    """What a job checks before its first stage, short of loading data (heavy imports happen only here)."""
    from bdrun.models import resolve_path
    from bdrun.pipeline import check_label_indices, check_model_shape, parse_experiment
    from bdrun.tracking import TRACKERS

    check_known_keys(cfg, declared)
    try:
        experiment = parse_experiment(cfg)
        TRACKERS.parse(cfg.logger)
    except OmegaConfBaseException as err:  # e.g. a node emptied by an override
        raise BdrunError(f"bad config: {condensed(err)}") from None
    check_label_indices(experiment, experiment.dataset.num_labels)
    if Path(resolve_path(experiment.model.path)).is_dir():  # a hub model's config is left to the job (network)
        check_model_shape(experiment, experiment.dataset.num_labels)


def preflight(argv: list[str]) -> list[list[str]]:
    """Raise a one-line :class:`BdrunError` for the first problem in the command line, before any job runs.

    Returns the override list of each job checked (none for options that start no job)."""
    if "--version" in argv or any(arg.startswith("--experimental-rerun") for arg in argv):
        return []
    args = parse_arguments(argv)
    modes = [flag for flag, on in MODES.items() if getattr(args, on)]
    check(len(modes) <= 1, f"{', '.join(modes)} cannot be combined; use one of them")
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return []  # these start no job
    config_name = args.config_name or CONFIG_NAME
    loader = config_loader(args)
    overrides = parse_overrides(args.overrides)
    repo = hydra_call(config_repository, loader, config_name, args.overrides)
    check_group_choices(repo, overrides)
    if not args.cfg:
        preset = preset_sweep(loader, config_name, overrides, args.multirun)
        check_group_choices(repo, preset)
        overrides = [*preset, *overrides]
    declared = compose(loader, config_name, [o.input_line or "" for o in overrides if is_search_path(o)])
    jobs = list(job_overrides(overrides, args.multirun, args.overrides))
    for job in jobs:
        cfg = compose(loader, config_name, job)
        if not args.cfg:  # --cfg prints the config and runs nothing: composing it is check enough
            validate(cfg, declared)
    return jobs


def is_search_path(override: Override) -> bool:
    return override.get_key_element() == "hydra.searchpath"
