"""The shared training loop: a run interrupted after a checkpoint resumes to bit-identical weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import bdrun.training as training
from bdrun.data import TextDataset
from bdrun.models import ModelConfig, load_pretrained, load_tokenizer
from bdrun.optimizers import OPTIMIZERS


class Interrupted(Exception):
    pass


MAX_LENGTH = 24


@pytest.fixture(scope="module")
def setup(random_bert):
    # Resuming bit-identically is a property of the loop and the optimizers' state, not of pre-trained weights:
    # a small random BERT (tests/conftest.py) keeps each of these trainings to a fraction of a second.
    model = ModelConfig(name="random-bert", path=str(random_bert), max_length=MAX_LENGTH)
    data = TextDataset([f"film number {i} was {'great' if i % 2 else 'awful'}" for i in range(48)], [1, 0] * 24)
    return load_tokenizer(model), load_pretrained(model, num_labels=2, seed=0), data


def run_training(
    setup, checkpoint_dir: Path | None, optimizer: str = "adamw", bucketing: bool = False
) -> torch.nn.Module:
    tokenizer, pretrained, data = setup
    model = copy.deepcopy(pretrained)
    config = training.TrainerConfig(epochs=2, batch_size=8, checkpoint_every=4, bucketing=bucketing, bucket_batches=2)
    training.train(
        model, tokenizer, data, OPTIMIZERS.build({"name": optimizer, "lr": 1e-3}), config,
        max_length=MAX_LENGTH, device=torch.device("cpu"), seed=7, checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    return model


# Every optimizer's own state (Child-Tuning-D's mask, GA-SAM's running gradient strength, the RNG behind
# Child-Tuning-F's masks and SAM's second-pass dropout) must survive the checkpoint.
@pytest.mark.parametrize("optimizer", ["adamw", "sam", "ga_sam", "child_tuning_d", "child_tuning_f"])
def test_resume_after_interruption_matches_uninterrupted_run(setup, tmp_path: Path, monkeypatch, optimizer) -> None:
    reference = run_training(setup, None, optimizer)

    real_save = training._save_checkpoint
    saves = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(args[1])
        if len(saves) == 3:  # after step 8: mid-way through the second of 2 epochs x 6 steps
            raise Interrupted

    monkeypatch.setattr(training, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run_training(setup, tmp_path, optimizer)
    monkeypatch.setattr(training, "_save_checkpoint", real_save)
    assert saves == [4, 6, 8]

    resumed = run_training(setup, tmp_path, optimizer)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    changed = any(not torch.equal(a, b) for a, b in zip(reference.parameters(), setup[1].parameters(), strict=True))
    assert changed, "training must have moved the weights"


def test_bucketed_training_resumes_bit_identically_mid_epoch(setup, tmp_path: Path, monkeypatch) -> None:
    tokenizer, pretrained, _ = setup
    texts = [f"film {'very ' * (i % 7)}number {i} was {'great' if i % 2 else 'awful'}" for i in range(48)]
    setup = (tokenizer, pretrained, TextDataset(texts, [1, 0] * 24))  # lengths vary, so buckets matter
    reference = run_training(setup, None, bucketing=True)
    plain = run_training(setup, None)  # bucketing changes the batches, hence the weights
    assert any(not torch.equal(a, b) for a, b in zip(reference.parameters(), plain.parameters(), strict=True))
    real_save = training._save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        if args[1] == 8:  # mid-way through the second epoch
            raise Interrupted

    monkeypatch.setattr(training, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run_training(setup, tmp_path, bucketing=True)
    monkeypatch.setattr(training, "_save_checkpoint", real_save)
    resumed = run_training(setup, tmp_path, bucketing=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
