"""The federated tests' fixtures: the defenses' tiny texts and stage context, on a small random BERT.

A round flattens every client's whole model into one vector. The properties checked here (a pure local update,
kill and resume, boosting, client embeddings) do not need pre-trained weights, and on the random BERT of
tests/conftest.py a client's vector is 1M entries instead of the 2-layer MiniLM's 15M.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bdrun.context import StageContext
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from tests.defenses.conftest import clean, pretrained, stage_context  # noqa: F401


@pytest.fixture(scope="session")
def small_model(random_bert: Path) -> ModelConfig:
    return ModelConfig(name="random-bert", path=str(random_bert), max_length=32)


@pytest.fixture(scope="session")
def tokenizer(small_model: ModelConfig):
    return load_tokenizer(small_model)


@pytest.fixture(scope="session")
def pretrained_model(small_model: ModelConfig) -> torch.nn.Module:
    return load_pretrained(small_model, num_labels=2, seed=0).eval()


@pytest.fixture
def context(tokenizer, pretrained_model, small_model: ModelConfig, tmp_path: Path) -> StageContext:
    return stage_context(tokenizer, pretrained_model, small_model, tmp_path)
