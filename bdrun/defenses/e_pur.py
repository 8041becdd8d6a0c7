"""E-PUR, embedding purification (Zhang et al., Findings of EMNLP 2022, with Fine-mixing).

Trigger words of rare-word backdoors (BadNets with ``cf``, EP) end up with input embeddings far from their
pre-trained values although the words hardly occur in clean data: clean fine-tuning moves a word's row only
as much as the word is used, so a large drift on a rare word is what an attacker leaves behind. E-PUR scores
every vocabulary row by that mismatch and resets the top-N rows to their pre-trained values.

``defense=e_pur`` runs it alone (optionally followed by clean fine-tuning); ``defense.e_pur=true`` runs it
before any other purifier: this module registers it as a preceding step of every purifier
(:func:`bdrun.defenses.base.preceding_step`), which :meth:`bdrun.defenses.base.Purifier.purify` runs once.

Our reading, not confirmed from the paper's full text (only its abstract could be read here):

- score = ‖e_ft − e_pre‖₂ / log(max(freq, 2)), freq = the word's count in the defender's clean set as the
  model reads it (wordpieces, special tokens included: [CLS] and [SEP] are in every input and drift a lot,
  so counting them as unseen would make them the top suspects); ``max(·, 2)`` keeps unseen words finite;
- N (``e_pur_top_n``) is a fixed knob, default 100 rows of the 30,522-row vocabulary: resetting a few
  hundred rare words costs little clean accuracy, and the paper's own choice of N could not be checked;
- only the word (input) embedding matrix is purified, not position or token-type embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier, preceding_step
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

REPORTED_SUSPECTS = 10  # rows listed in the diagnostics


@dataclasses.dataclass
class EPurConfig(CleanDataConfig):
    e_pur: bool = True  # always on for the standalone defense
    fine_tune: bool = False  # after the reset, fine-tune on the clean set (epochs, lr)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.e_pur, "defense=e_pur always applies E-PUR; set defense.e_pur=true on another defense instead")


def word_frequencies(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], vocab_size: int) -> torch.Tensor:
    """How often each vocabulary id occurs in ``texts`` as the model reads them (special tokens included)."""
    ids = tokenizer(list(texts))["input_ids"]
    flat = torch.tensor([token for row in ids for token in row], dtype=torch.long)
    return torch.bincount(flat, minlength=vocab_size)


def suspicion_scores(suspect: torch.Tensor, pretrained: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Per vocabulary row: embedding drift divided by the log of its clean frequency (at least log 2)."""
    drift = (suspect.float() - pretrained.float()).norm(dim=1)
    return drift / torch.log(frequencies.clamp(min=2).float())


@torch.no_grad()
def embedding_purification(
    model: torch.nn.Module,
    pretrained: torch.nn.Module,
    clean: TextDataset,
    tokenizer: PreTrainedTokenizerBase,
    top_n: int,
) -> dict[str, Any]:
    """Reset the ``top_n`` most suspicious input-embedding rows of ``model`` to ``pretrained``'s; report them."""
    embeddings = model.get_input_embeddings().weight
    reference = pretrained.get_input_embeddings().weight.to(embeddings.device)
    frequencies = word_frequencies(tokenizer, clean.texts, embeddings.shape[0])
    scores = suspicion_scores(embeddings, reference, frequencies.to(embeddings.device))
    top = scores.topk(min(top_n, len(scores))).indices
    drift = (embeddings[top].float() - reference[top].float()).norm(dim=1)
    embeddings[top] = reference[top]
    tokens = tokenizer.convert_ids_to_tokens(top[:REPORTED_SUSPECTS].tolist())
    return {
        "reset_words": len(top),
        "top_suspects": [
            {"token": token, "score": float(scores[i]), "drift": float(drift[rank]), "clean_freq": int(frequencies[i])}
            for rank, (token, i) in enumerate(zip(tokens, top.tolist(), strict=False))
        ],
    }


@preceding_step("e_pur")
def e_pur_step(
    model: torch.nn.Module, clean: TextDataset, context: StageContext, config: CleanDataConfig
) -> dict[str, Any] | None:
    """E-PUR before any purifier whose knobs turn it on (``defense.e_pur=true``; always for ``defense=e_pur``)."""
    if not config.e_pur:
        return None
    pretrained = context.load_pretrained()
    return embedding_purification(model, pretrained, clean, context.tokenizer, config.e_pur_top_n)


@DEFENSES.register("e_pur", EPurConfig)
class EPur(Purifier):
    """E-PUR alone: the reset is the preceding step (:func:`e_pur_step`, ``e_pur`` forced on); then optional
    tuning."""

    config: EPurConfig

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        return self.fine_tune(model, clean, context, "e-pur fine-tuning") if self.config.fine_tune else {}
