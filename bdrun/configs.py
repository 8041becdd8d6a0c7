"""Where bdrun's Hydra configs live, and the config search path a command line asks for.

Two layouts hold the same ``conf/`` folder:

- a source checkout (``pip install -e .`` or ``PYTHONPATH``): ``conf/`` at the top of the repository, beside
  the ``bdrun`` package, where users read and edit it;
- an installed wheel (``pip install .``): setup.py maps the package ``bdrun.conf`` to that folder, so the wheel
  carries it as ``bdrun/conf`` inside the package.

:func:`find_conf_dir` prefers the packaged copy (a wheel has nothing beside the package: ``site-packages/conf``
would be some other project's) and falls back to the source tree.

Users add their own choices without touching either: Hydra's search path (``hydra.searchpath=[file:///my/conf]``
on the command line or in a config, or ``--config-dir /my/conf``) is read here exactly as Hydra reads it, so the
checks before work (:mod:`bdrun.preflight`) accept every choice Hydra will find.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from omegaconf import OmegaConf

from bdrun.errors import BdrunError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_NAME = "config"
JOB_DIRNAME_BYTES = 120  # a multirun job's folder name; filesystems refuse names over 255 bytes


def job_dirname(overrides: str) -> str:
    """A multirun job's folder name (``hydra.sweep.subdir``) from its overrides, cut to ``JOB_DIRNAME_BYTES``.

    Hydra names each job's folder after all its overrides, so a sweep over a long preset command line
    (the PET table's rows, say) failed with "File name too long" before its first job. A cut name keeps its
    beginning for the reader and ends in a hash of the whole, so two jobs never share a folder; the overrides
    themselves are in each job's ``.hydra/overrides.yaml``.
    """
    raw = overrides.encode()
    if len(raw) <= JOB_DIRNAME_BYTES:
        return overrides
    digest = hashlib.sha1(raw).hexdigest()[:10]
    return f"{raw[: JOB_DIRNAME_BYTES - 11].decode(errors='ignore')}_{digest}"


OmegaConf.register_new_resolver("bdrun_job_dirname", job_dirname, replace=True)


def find_conf_dir() -> Path:
    """The packaged ``bdrun/conf`` of an installed wheel, else the repository's top-level ``conf/``."""
    packaged = PACKAGE_DIR / "conf"
    if (packaged / f"{CONFIG_NAME}.yaml").is_file():
        return packaged
    return PACKAGE_DIR.parent / "conf"


CONF_DIR = find_conf_dir()


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Hydra's own command-line parser, with its usage-plus-error exit turned into a one-line BdrunError."""
    parser = get_args_parser()

    def error(message: str) -> None:
        raise BdrunError(f"{message}; options go before the overrides, see bdrun --help")

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(argv)


def search_path(args: argparse.Namespace, conf_dir: Path = CONF_DIR) -> ConfigSearchPath:
    """The search path Hydra builds for this command line (before ``hydra.searchpath``, which the loader adds).

    Mirrors ``hydra._internal.utils._run_hydra``: ``--config-path`` replaces the primary folder (relative to
    this package, as Hydra resolves it for ``bdrun.cli``) and ``--config-dir`` is put in front.
    """
    primary = conf_dir
    if args.config_path:
        primary = Path(args.config_path)
        if not primary.is_absolute():
            primary = (PACKAGE_DIR / primary).resolve()
        if not primary.is_dir():
            raise BdrunError(f"--config-path {args.config_path}: folder {primary} does not exist")
    path = create_config_search_path(f"file://{primary}")
    if args.config_dir is not None:
        extra = os.path.abspath(args.config_dir)
        if not os.path.isdir(extra):
            raise BdrunError(f"--config-dir {args.config_dir}: folder {extra} does not exist")
        path.prepend(provider="command-line", path=f"file://{extra}")
    return path


def config_loader(args: argparse.Namespace, conf_dir: Path = CONF_DIR) -> ConfigLoaderImpl:
    return ConfigLoaderImpl(config_search_path=search_path(args, conf_dir))


def config_repository(loader: ConfigLoaderImpl, config_name: str, overrides: list[str]) -> CachingConfigRepository:
    """Every config source on the search path, ``hydra.searchpath`` (primary config or override) included."""
    _, repo = loader._parse_overrides_and_create_caching_repo(config_name, overrides)
    return repo


def group_options(repo: CachingConfigRepository, group: str) -> list[str] | None:
    """The choices of config group ``group`` over the whole search path; None if there is no such group."""
    if not repo.group_exists(group):
        return None
    return repo.get_group_options(group, ObjectType.CONFIG)
