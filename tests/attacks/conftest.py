"""A tiny clean victim model, trained once per test session, for the model-editing attack tests."""

from __future__ import annotations

import pytest
import torch

from bdrun.data import load_splits
from bdrun.pipeline import Stages, parse_experiment
from tests.conftest import compose_config

SMALL = "dataset.max_samples={train:64,dev:16,test:32}"  # on top of TINY: these tests need little data


@pytest.fixture(scope="session")
def victim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stages, torch.nn.Module]:
    """The stages of a tiny run (tokenizer, splits, context) and the clean model its train stage built."""
    exp = parse_experiment(compose_config([SMALL], cache_dir=tmp_path_factory.mktemp("cache")))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    return stages, stages.load(stages.train_clean())
