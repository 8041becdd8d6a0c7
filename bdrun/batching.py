"""Tokenise once, then pad each batch only to its own longest input (dynamic padding).

Sentence pairs carry their segment ids with their token ids (:class:`PairIds`), so ``collate`` adds
``token_type_ids`` exactly when a batch holds a pair and every single-sentence batch stays as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.data.pairs import is_pair, split_pair


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included).

    A sentence pair (:mod:`bdrun.data.pairs`) becomes the tokenizer's pair input; truncation then shortens the
    longer sentence first (``longest_first``, the tokenizers' default for pairs).
    """
    texts = list(texts)
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
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if any(getattr(ids, "token_types", None) is not None for ids in encoded):  # sentence pairs: segment ids
        token_types = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            if getattr(ids, "token_types", None) is not None:
                token_types[row, : len(ids)] = torch.tensor(ids.token_types, dtype=torch.long)
        batch["token_type_ids"] = token_types.to(device)
    return batch
