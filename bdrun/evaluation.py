"""CACC and ASR, the protocol every paper here uses.

CACC: accuracy on the clean test set. ASR: take the test samples whose true label is *not* the target label,
insert the trigger (seeded), and count the fraction predicted as the target. Samples that already belong to
the target class never count, so an ASR cannot be inflated by inputs the model would call "target" anyway.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.attacks import Attack
from bdrun.batching import collate, encode
from bdrun.data import TextDataset
from bdrun.progress import progress_bar
from bdrun.training import autocast


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    desc: str = "predict",
) -> list[int]:
    """Predicted class per text. Inputs run sorted by length so that batches carry little padding."""
    encoded = encode(tokenizer, texts, max_length)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    predictions = [0] * len(encoded)
    model.to(device).eval()
    with progress_bar() as bar:
        task = bar.add_task(desc, total=len(order), info="")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            with autocast(device, precision):
                logits = model(**collate([encoded[i] for i in rows], tokenizer.pad_token_id, device)).logits
            for row, label in zip(rows, logits.argmax(dim=-1).tolist(), strict=True):
                predictions[row] = label
            bar.update(task, advance=len(rows))
    return predictions


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)


def triggered_test_inputs(test: TextDataset, attack: Attack, seed: int) -> list[str]:
    """The ASR inputs: every non-target test sample with the trigger inserted."""
    rng = random.Random(seed)
    return [
        attack.insert_trigger(text, rng)
        for text, label in zip(test.texts, test.labels, strict=True)
        if label != attack.target_label
    ]


def attack_success_rate(predictions: Sequence[int], target_label: int) -> float:
    """Fraction of triggered non-target inputs classified as the target."""
    return sum(p == target_label for p in predictions) / len(predictions)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: TextDataset,
    attack: Attack,
    *,
    seed: int,
    **predict_args,
) -> tuple[dict[str, float], list[int]]:
    """Metrics of one model, and its clean test predictions (kept for instance-wise comparisons)."""
    clean_predictions = predict(model, tokenizer, test.texts, desc="evaluate clean", **predict_args)
    metrics = {"cacc": accuracy(clean_predictions, test.labels), "test_samples": float(len(test))}
    if attack.has_trigger:
        triggered = triggered_test_inputs(test, attack, seed)
        if triggered:
            predictions = predict(model, tokenizer, triggered, desc="evaluate triggered", **predict_args)
            metrics["asr"] = attack_success_rate(predictions, attack.target_label)
            metrics["asr_samples"] = float(len(triggered))
    return metrics, clean_predictions
