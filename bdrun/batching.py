"""Tokenise once, then pad each batch only to its own longest input (dynamic padding).

Training may also group inputs of similar length into the same batch (:func:`length_bucketed_batches`), so
that dynamic padding has almost nothing left to pad.

Sentence pairs carry their segment ids with their token ids (:class:`PairIds`), so ``collate`` adds
``token_type_ids`` exactly when a batch holds a pair and every single-sentence batch stays as it was.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.data.pairs import is_pair, split_pair

# tokenizer -> max_length -> text -> ids. Every stage of a run tokenises the same texts again (the poisoned
# training set is mostly the clean one; each model's evaluation reads the same test inputs), so each distinct
# text is tokenised once per run. Weak keys: the memo goes when the run's tokenizer does.
_MEMO: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict[int, dict[str, list[int]]]] = weakref.WeakKeyDictionary()


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included).

    A sentence pair (:mod:`bdrun.data.pairs`) becomes the tokenizer's pair input. The id lists are shared with
    later calls (memoised per tokenizer): read them, do not modify them.
    """
    memo = _MEMO.setdefault(tokenizer, {}).setdefault(max_length, {})
    missing = list(dict.fromkeys(t for t in texts if t not in memo))
    if missing:
        memo.update(zip(missing, tokenize(tokenizer, missing, max_length), strict=True))
    return [memo[t] for t in texts]


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, without the memo; a pair's truncation shortens the longer sentence first
    (``longest_first``, the tokenizers' default for pairs).
    """
    pairs = [i for i, text in enumerate(texts) if is_pair(text)]
    if not pairs:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    encoded: list[list[int]] = [[] for _ in texts]
    singles = [i for i, text in enumerate(texts) if not is_pair(text)]
    if singles:
        ids = tokenizer([texts[i] for i in singles], truncation=True, max_length=max_length)["input_ids"]
        for i, row in zip(singles, ids, strict=True):
            encoded[i] = row
    halves = [split_pair(texts[i]) for i in pairs]
    output = tokenizer(
        [a for a, _ in halves], [b for _, b in halves], truncation="longest_first", max_length=max_length
    )
    types = output.get("token_type_ids") or [None] * len(pairs)  # absent for models without segments (RoBERTa)
    for i, row, row_types in zip(pairs, output["input_ids"], types, strict=True):
        encoded[i] = PairIds(row, row_types)
    return encoded


class PairIds(list):
    """The token ids of a sentence pair, with the tokenizer's segment ids (``token_types``, or None)."""

    def __init__(self, ids: Sequence[int], token_types: Sequence[int] | None) -> None:
        super().__init__(ids)
        self.token_types = list(token_types) if token_types is not None else None


def collate(encoded: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One padded batch on ``device``. On CUDA the host tensors are pinned so the copy can run asynchronously
    (the kernels that consume them are queued on the same stream, so the order is still safe)."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    batch = {"input_ids": to_device(input_ids, device), "attention_mask": to_device(attention_mask, device)}
    if any(getattr(ids, "token_types", None) is not None for ids in encoded):  # sentence pairs: segment ids
        token_types = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            if getattr(ids, "token_types", None) is not None:
                token_types[row, : len(ids)] = torch.tensor(ids.token_types, dtype=torch.long)
        batch["token_type_ids"] = to_device(token_types, device)
    return batch


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
    batch. Hugging Face's ``group_by_length`` uses 50 batches per bucket; bdrun's default is 8
    (``conf/trainer/default.yaml``), which over five paired seeds gave the same CACC as unbucketed training.
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
