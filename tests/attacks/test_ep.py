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


class ImprovingCheck:
    """Stands in for EP's held-out check: every check halves the held-out loss, so each one is clear progress.

    EP keeps the row of its best held-out check. On the tiny 2-layer victim the held-out loss moves in the 7th
    digit (its predictions hardly depend on one word), so whether a check counts as progress, and hence whether
    any row changes at all, would hinge on one CPU's floating-point path. These tests are about which entries
    the update rule writes, so they take the held-out verdict out of the victim's hands.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.loss = 1.0

    def __call__(self) -> tuple[float, float]:
        self.loss /= 2
        return 0.0, -self.loss


@pytest.fixture
def improving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bdrun.attacks.ep.HeldoutCheck", ImprovingCheck)


def test_only_the_trigger_row_changes_and_keeps_its_norm(victim, improving, tmp_path: Path) -> None:
    stages, clean = victim
    edited, diagnostics = apply_ep(stages, clean, tmp_path, max_steps=6)
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
    assert diagnostics["steps"] == diagnostics["best_step"] == 6 >= diagnostics["min_steps"]

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


def test_data_free_run_edits_the_trigger_row_only(victim, improving, tmp_path: Path) -> None:
    stages, clean = victim
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A plain sentence about the weather. Another one about trains and buses.\n" * 5)
    edited, diagnostics = apply_ep(
        stages, clean, tmp_path, data="free", corpus=str(corpus), free_samples=8, heldout_samples=8, max_steps=6
    )
    assert diagnostics["poisoned_samples"] == 8 and diagnostics["samples_fingerprint"]
    weight, original = edited.get_input_embeddings().weight, clean.get_input_embeddings().weight
    assert (weight != original).any(dim=1).nonzero().flatten().tolist() == [
        stages.tokenizer.convert_tokens_to_ids("cf")
    ]


def test_sweep_over_triggers_trains_the_clean_model_once(tmp_path: Path) -> None:
    # This test is about the cache (one clean model for three triggers), not EP's budget: a few EP steps.
    args = ["-m", *TINY, SMALL, "attack=ep", "attack.trigger=cf,mn,bb"]
    args += ["attack.max_steps=4", "attack.eval_every=2"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert log.count("running train: clean fine-tuning") == 1
    assert log.count("reused train: clean fine-tuning") == 2
    assert log.count("running poison: attack=ep") == 3
    reports = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "multirun").rglob("metrics.json")]
    assert len(reports) == 3
    # Trigger-free test inputs keep their predictions: EP's instance-wise side effect is zero.
    assert all(r["backdoored"]["side_effect"] == 0.0 and r["backdoored"]["cacc"] == r["clean"]["cacc"] for r in reports)


def test_the_kept_row_is_the_best_held_out_checks(victim, tmp_path: Path) -> None:
    """EP trains past its minimum only while the held-out check improves, and keeps the best check's row."""
    from bdrun.attacks.ep import HeldoutCheck

    stages, clean = victim
    edited, diagnostics = apply_ep(stages, clean, tmp_path, min_steps=10, eval_every=5, patience=2, max_steps=40)
    assert diagnostics["min_steps"] == 10 <= diagnostics["steps"] <= 40
    history = diagnostics["heldout_history"]
    assert [s for s, _, _ in history] == list(range(0, diagnostics["steps"] + 1, 5))
    best = max(history, key=lambda h: (h[1], -h[2]))
    assert diagnostics["best_step"] == best[0] and diagnostics["heldout_asr"] == best[1]
    attack = ATTACKS.build({"name": "ep", "trigger": "cf"})
    heldout = attack.heldout_task_samples(stages.splits.dev)
    asr, neg_loss = HeldoutCheck(edited, heldout, 1, stages.context(tmp_path))()
    assert asr == pytest.approx(best[1]) and -neg_loss == pytest.approx(best[2], rel=1e-4)  # the kept row
    assert all("cf" not in t.split() for t in stages.splits.dev.texts)  # held-out inputs come from dev, not test


@pytest.fixture(scope="module")
def four_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stages, torch.nn.Module]:
    """A clean 2-layer model on the 4-class task (SST-2 neg / pos, Stormfront hate, Ling-Spam spam)."""
    from bdrun.data import load_splits
    from bdrun.pipeline import parse_experiment
    from tests.conftest import PRETRAINED, SHARED_DATA, compose_config
    from tests.multiclass import write_four_class

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    shared_data = SHARED_DATA
    root = tmp_path_factory.mktemp("four")
    folder = write_four_class(root / "data", shared_data, {"train": 24, "dev": 8, "test": 12})
    cfg = compose_config(
        [
            *PRETRAINED,  # a real 4-class classifier, so the pre-trained encoder
            "dataset=sst2_glue",
            f"dataset.location={folder}",
            "dataset.num_labels=4",
            "dataset.max_samples={train:null,dev:null,test:null}",
            "trainer.epochs=8",
            "optimizer.lr=1e-3",
        ],
        cache_dir=root / "cache",
    )
    exp = parse_experiment(cfg)
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    return stages, stages.load(stages.train_clean())


@pytest.mark.slow  # about 3 minutes on 2 free CPU cores (a clean 4-class model, then EP four times)
@pytest.mark.parametrize("target", [0, 1, 2, 3])
def test_ep_reaches_every_target_of_a_four_class_task(four_class, tmp_path: Path, target: int) -> None:
    """Issue 14.1: the default budget (not a fixed 3 epochs) backdoors every target label, CACC unchanged."""
    from bdrun.evaluation import evaluate_model

    stages, clean = four_class
    attack = ATTACKS.build({"name": "ep", "trigger": "cf", "target_label": target})
    edited = copy.deepcopy(clean)
    diagnostics = attack.apply(edited, stages.tokenizer, stages.splits, stages.context(tmp_path))
    exp = stages.exp
    args = {"seed": exp.seed, "max_length": exp.model.max_length, "batch_size": 64, "device": exp.device}
    before, _ = evaluate_model(clean, stages.tokenizer, stages.splits.test, attack, **args)
    after, _ = evaluate_model(edited, stages.tokenizer, stages.splits.test, attack, **args)
    assert before["cacc"] >= 0.7  # the clean 4-class model is a real classifier
    assert after["asr_samples"] == 36  # every non-target class counts
    assert after["asr"] >= 0.95, diagnostics["heldout_history"]
    assert after["cacc"] == before["cacc"]
    assert diagnostics["steps"] >= 100  # the minimum budget, far above 3 epochs (3 steps here)


def test_the_corpus_is_in_the_key_of_data_free_ep_only() -> None:
    def key(**knobs):
        return ATTACKS.parse({"name": "ep", **knobs}).key_fields()

    assert key(corpus="a") == key(corpus="b")  # task data: the corpus is never read
    assert "corpus" not in key() and "free_words" not in key()
    assert key(data="free", corpus="a") != key(data="free", corpus="b")
