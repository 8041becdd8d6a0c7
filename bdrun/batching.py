"""Tokenise once, then pad each batch only to its own longest input (dynamic padding).

Training may also group inputs of similar length into the same batch (:func:`length_bucketed_batches`), so
that dynamic padding has almost nothing left to pad.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

# tokenizer -> max_length -> text -> ids. Every stage of a run tokenises the same texts again (the poisoned
# training set is mostly the clean one; each model's evaluation reads the same test inputs), so each distinct
# text is tokenised once per run. Weak keys: the memo goes when the run's tokenizer does.
_MEMO: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict[int, dict[str, list[int]]]] = weakref.WeakKeyDictionary()


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included).

    The id lists are shared with later calls (memoised per tokenizer): read them, do not modify them.
    """
    memo = _MEMO.setdefault(tokenizer, {}).setdefault(max_length, {})
    missing = list(dict.fromkeys(t for t in texts if t not in memo))
    if missing:
        memo.update(zip(missing, tokenizer(missing, truncation=True, max_length=max_length)["input_ids"], strict=True))
    return [memo[t] for t in texts]


def collate(encoded: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One padded batch on ``device``. On CUDA the host tensors are pinned so the copy can run asynchronously
    (the kernels that consume them are queued on the same stream, so the order is still safe)."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": to_device(input_ids, device), "attention_mask": to_device(attention_mask, device)}


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy: pinned and non-blocking on CUDA, a no-op on the CPU."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, bucket_batches: int
) -> list[list[int]]:
    """One epoch of batches (row indices) in which each batch holds inputs of similar length.

    The rows are shuffled, cut into buckets of ``bucket_batches * batch_size`` rows, each bucket is sorted by
    length and cut into batches, and the order of all batches is shuffled again; every row appears exactly
    once. Only the very last bucket can end in a short batch, so an epoch has ``ceil(n / batch_size)`` batches
    like the unbucketed one. Buckets (rather than one global sort) keep randomness in which inputs share a
    batch; 50 batches per bucket is the trade-off Hugging Face's ``group_by_length`` makes, kept here.
    The batch with the longest input goes first, so a batch size that does not fit in memory fails at once
    instead of late in the epoch. Everything is drawn from ``generator``, so the batches are a function of its
    seed alone (what resuming mid-epoch relies on).
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size))
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches
