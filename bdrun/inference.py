"""Batched inference and the arithmetic on its outputs that evaluation and the defenses share.

This module sits below both :mod:`bdrun.evaluation` (which scores a run) and :mod:`bdrun.defenses` (whose
detectors set thresholds and whose purifiers check accuracy on held-out data), and below
:mod:`bdrun.context`, which batches every method's forward passes through :func:`batch_outputs`. It imports
none of them, so none of them has to import another inside a function to dodge a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from bdrun.batching import collate, encode
from bdrun.progress import progress_bar
from bdrun.training import autocast

DETECTION_FRRS = (0.01, 0.05)  # FAR is reported at these false-rejection rates, set on held-out clean scores

Reduce = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


@torch.no_grad()
def batch_outputs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    reduce: Reduce,
    *,
    max_length: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    desc: str = "predict",
    **forward_args: Any,
) -> torch.Tensor:
    """``reduce(model output, batch)`` per text (first dimension), on the CPU, in the order of ``texts``.

    Inputs run sorted by length so that batches carry little padding. ``forward_args`` go to the model
    (e.g. ``output_hidden_states=True`` for detectors that read every layer).
    """
    encoded = encode(tokenizer, texts, max_length) if texts else []
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    rows: list[torch.Tensor] = []
    model.to(device).eval()
    with progress_bar() as bar:
        task = bar.add_task(desc, total=len(order), info="")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([encoded[i] for i in chunk], tokenizer.pad_token_id, device)
            with autocast(device, precision):
                output = model(**batch, **forward_args)
            rows.append(reduce(output, batch).cpu())
            bar.update(task, advance=len(chunk))
    if not rows:
        return torch.empty(0)
    stacked = torch.cat(rows)
    result = torch.empty_like(stacked)
    result[torch.tensor(order)] = stacked
    return result


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
    """Predicted class per text."""
    return batch_outputs(
        model,
        tokenizer,
        texts,
        lambda output, batch: output.logits.argmax(dim=-1),
        max_length=max_length,
        batch_size=batch_size,
        device=device,
        precision=precision,
        desc=desc,
    ).tolist()


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)


def threshold_at_frr(clean_scores: np.ndarray, frr: float) -> float:
    """The score above which at most a fraction ``frr`` of ``clean_scores`` lies (flag: score > threshold).

    The ``higher`` quantile (an observed score, never an interpolation below it) guarantees the bound.
    """
    return float(np.quantile(np.asarray(clean_scores, dtype=np.float64), 1.0 - frr, method="higher"))


def frr_thresholds(heldout_clean_scores: np.ndarray) -> dict[float, float]:
    """The threshold of each FRR in :data:`DETECTION_FRRS`, set on held-out clean scores (never the test's)."""
    return {frr: threshold_at_frr(heldout_clean_scores, frr) for frr in DETECTION_FRRS}
