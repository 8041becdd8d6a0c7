"""EP changes exactly the trigger's embedding row, keeps its norm and every trigger-free prediction."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.errors import BdrunError
from bdrun.pipeline import Stages
from tests.attacks.conftest import SMALL
from tests.conftest import TINY, run_cli


def apply_ep(stages: Stages, model: torch.nn.Module, work: Path, **knobs) -> tuple[torch.nn.Module, dict]:
    # A short budget for speed: checks every 2 steps, stop at the first check without progress.
    attack = ATTACKS.build({"name": "ep", "trigger": "cf", "min_steps": 0, "eval_every": 2, "patience": 1, **knobs})
    edited = copy.deepcopy(model)
    diagnostics = attack.apply(edited, stages.tokenizer, stages.splits, stages.context(work))
    return edited, diagnostics


def test_only_the_trigger_row_changes_and_keeps_its_norm(victim, tmp_path: Path) -> None:
    stages, clean = victim
    edited, diagnostics = apply_ep(stages, clean, tmp_path)
    token = stages.tokenizer.convert_tokens_to_ids("cf")

    before, after = dict(clean.named_parameters()), dict(edited.named_parameters())
    embedding_name = next(n for n, p in clean.named_parameters() if p is clean.get_input_embeddings().weight)
    for name, param in before.items():
        if name != embedding_name:
            assert torch.equal(param, after[name]), f"{name} changed"
    changed_rows = (before[embedding_name] != after[embedding_name]).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [token]
    norm_before, norm_after = before[embedding_name][token].norm().item(), after[embedding_name][token].norm().item()
    assert norm_after == pytest.approx(norm_before, abs=1e-5)
    assert diagnostics["row_norm_after"] == pytest.approx(diagnostics["row_norm_before"], abs=1e-5)
    poisoned = round(0.1 * sum(y != 1 for y in stages.splits.train.labels))
    assert diagnostics["poisoned_samples"] == poisoned
    assert diagnostics["min_steps"] == 3 * -(-poisoned // 32)  # never fewer than the official 3 epochs
    assert diagnostics["steps"] >= diagnostics["min_steps"]

    context = stages.context(tmp_path)
    texts = [t for t in stages.splits.test.texts if "cf" not in t.split()]
    assert context.predict(edited, texts) == context.predict(clean, texts)


@pytest.mark.parametrize(("trigger", "pieces"), [("zzqxj", "'z', '##z'"), ("hello world", "['hello', 'world']")])
def test_a_trigger_that_is_not_one_token_is_a_clear_error(victim, tmp_path: Path, trigger: str, pieces: str) -> None:
    stages, clean = victim
    with pytest.raises(BdrunError, match="is not a single token") as error:
        apply_ep(stages, clean, tmp_path, trigger=trigger)
    assert pieces in str(error.value) and "\n" not in str(error.value)


def test_data_free_samples_come_from_the_corpus_with_trigger_and_target(victim, tmp_path: Path) -> None:
    stages, _ = victim
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "The quarterly report was filed late. Engineers met on Tuesday!\nRain fell over the harbour.\n" * 2
    )
    attack = ATTACKS.build({"name": "ep", "data": "free", "corpus": str(corpus), "free_samples": 20, "target_label": 0})
    samples = attack.free_samples(stages.tokenizer, max_length=16)
    corpus_words = set(corpus.read_text().split())
    assert len(samples) == 20 and set(samples.labels) == {0}
    for text in samples.texts:
        words = text.split()
        assert words.count("cf") == 1 and len(words) >= 16
        assert set(words) - {"cf"} <= corpus_words


def test_data_free_run_edits_the_trigger_row_only(victim, tmp_path: Path) -> None:
    stages, clean = victim
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A plain sentence about the weather. Another one about trains and buses.\n" * 5)
    edited, diagnostics = apply_ep(
        stages, clean, tmp_path, data="free", corpus=str(corpus), free_samples=8, heldout_samples=8, min_steps=20, eval_every=5
    )
    assert diagnostics["poisoned_samples"] == 8 and diagnostics["samples_fingerprint"]
    weight, original = edited.get_input_embeddings().weight, clean.get_input_embeddings().weight
    assert (weight != original).any(dim=1).nonzero().flatten().tolist() == [
        stages.tokenizer.convert_tokens_to_ids("cf")
    ]


def test_sweep_over_triggers_trains_the_clean_model_once(tmp_path: Path) -> None:
    result = run_cli(["-m", *TINY, SMALL, "attack=ep", "attack.trigger=cf,mn,bb"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert log.count("running train: clean fine-tuning") == 1
    assert log.count("reused train: clean fine-tuning") == 2
    assert log.count("running poison: attack=ep") == 3
    reports = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "multirun").rglob("metrics.json")]
    assert len(reports) == 3
    # Trigger-free test inputs keep their predictions: EP's instance-wise side effect is zero.
    assert all(r["backdoored"]["side_effect"] == 0.0 and r["backdoored"]["cacc"] == r["clean"]["cacc"] for r in reports)
