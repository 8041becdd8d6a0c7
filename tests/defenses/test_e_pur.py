"""E-PUR ranks an embedding-poisoned trigger word first and resets exactly the top-N rows."""

from __future__ import annotations

import copy

import pytest
import torch

from bdrun.data import Splits, TextDataset
from bdrun.defenses import DEFENSES
from bdrun.defenses.e_pur import embedding_purification, word_frequencies
from bdrun.errors import BdrunError


def ep_poisoned(pretrained: torch.nn.Module, tokenizer, clean: TextDataset) -> torch.nn.Module:
    """Simulated EP: the "cf" row moves far away at its original norm; frequent words drift even further.

    The frequent words' raw drift (3x their norm) is larger than cf's (at most 2x), so ranking by drift alone
    would fail: only the division by clean frequency puts cf first.
    """
    suspect = copy.deepcopy(pretrained)
    rows = suspect.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    frequent = word_frequencies(tokenizer, clean.texts, rows.shape[0]).topk(5).indices
    trigger = tokenizer.convert_tokens_to_ids("cf")
    with torch.no_grad():
        for row in frequent.tolist():
            noise = torch.randn(rows.shape[1], generator=generator)
            rows[row] += 3 * rows[row].norm() * noise / noise.norm()
        far = -rows[trigger] + 0.5 * rows[trigger].norm() * torch.randn(rows.shape[1], generator=generator)
        rows[trigger] = far * rows[trigger].norm() / far.norm()
    return suspect


def test_ep_trigger_ranks_first_and_only_top_n_rows_are_reset(pretrained, tokenizer, clean) -> None:
    suspect = ep_poisoned(pretrained, tokenizer, clean)
    before = suspect.get_input_embeddings().weight.detach().clone()
    report = embedding_purification(suspect, pretrained, clean, tokenizer, top_n=3)

    assert report["top_suspects"][0]["token"] == "cf"
    assert report["top_suspects"][0]["clean_freq"] == 0
    assert report["reset_words"] == 3
    after, original = suspect.get_input_embeddings().weight, pretrained.get_input_embeddings().weight
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    reset_ids = tokenizer.convert_tokens_to_ids([s["token"] for s in report["top_suspects"]])
    assert sorted(changed) == sorted(reset_ids)
    assert torch.equal(after[reset_ids], original[reset_ids])


def test_the_e_pur_flag_runs_inside_any_purifier(pretrained, tokenizer, clean, context) -> None:
    suspect = ep_poisoned(pretrained, tokenizer, clean)
    splits = Splits(train=clean, dev=clean, test=clean, num_labels=2)
    defense = DEFENSES.build({"name": "e_pur", "clean_size": len(clean), "e_pur_top_n": 1})
    diagnostics = defense.purify(suspect, splits, context)
    trigger = tokenizer.convert_tokens_to_ids("cf")
    assert diagnostics["e_pur"]["top_suspects"][0]["token"] == "cf"
    assert diagnostics["clean_samples"] == len(clean)
    reference = pretrained.get_input_embeddings().weight
    assert torch.equal(suspect.get_input_embeddings().weight[trigger], reference[trigger])


def test_standalone_e_pur_cannot_be_switched_off() -> None:
    with pytest.raises(BdrunError, match="always applies E-PUR"):
        DEFENSES.build({"name": "e_pur", "e_pur": False})
