"""The datasets of Gu et al. (ACL 2023)'s PET transfer pairs: IMDB and Enron-Spam parse to their documented rows
with their quirks handled, Ling-Spam gives train/dev/test from the raw corpus, the four pairs (SST-2 -> IMDB,
IMDB -> SST-2, Enron -> Ling-Spam, Ling-Spam -> Enron) run by name with attack.source, and one runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bdrun.batching import encode
from bdrun.configs import CONF_DIR
from bdrun.data import load_splits
from bdrun.data.loading import load_named_train
from bdrun.pipeline import Stages, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import compose_config
from tests.test_data import counts, dataset_config

PAIRS = [("imdb", "sst2"), ("sst2", "imdb"), ("lingspam", "enron"), ("enron", "lingspam")]  # (source A, user B)


def reference_texts(path: Path) -> list[str]:
    """The file's texts parsed the plain way the data README prescribes: lines split on LF only, the label after
    the last tab, edges stripped. Quote-aware parsing or ``str.splitlines`` would give other rows."""
    lines = path.read_text(encoding="utf-8").split("\n")[1:]
    return [line.rsplit("\t", 1)[0].strip() for line in lines if line.strip()]


def test_imdb_rows_labels_and_quirks(shared_data: Path) -> None:
    splits = load_splits(dataset_config("imdb"), shared_data)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (20000, 5000, 25000)
    assert (counts(splits.train), counts(splits.dev), counts(splits.test)) == ((10000,) * 2, (2500,) * 2, (12500,) * 2)
    everything = [*splits.train.texts, *splits.dev.texts, *splits.test.texts]
    assert all(everything)  # no empty text
    assert sum(t.startswith('"') for t in everything) == 1091  # an opening quote is text, not CSV quoting
    assert max(map(len, everything)) == 13704
    raw = [(shared_data / "imdb" / f"{split}.tsv").read_text(encoding="utf-8") for split in ("train", "dev", "test")]
    assert sum(line.count("\x85") > 0 for text in raw for line in text.split("\n")) == 681
    for split, data in (("train", splits.train), ("dev", splits.dev), ("test", splits.test)):
        # Row for row what the plain parse gives: no row split at U+0085, none merged at a quote.
        assert data.texts == reference_texts(shared_data / "imdb" / f"{split}.tsv"), split
    assert sum("\x85" in t for t in everything) > 600  # inside texts, kept


def test_enron_rows_labels_and_quirks(shared_data: Path) -> None:
    splits = load_splits(dataset_config("enron"), shared_data)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (21365, 2772, 6000)
    assert (counts(splits.train), counts(splits.dev), counts(splits.test)) == (
        (10981, 10384),
        (1452, 1320),
        (3157, 2843),
    )
    everything = [*splits.train.texts, *splits.dev.texts, *splits.test.texts]
    assert all(t.startswith("Subject:") for t in everything)  # one whole e-mail per row, none empty
    assert max(map(len, splits.train.texts)) == 228377  # past csv's default 128 KiB field limit, read whole
    assert sum("\ufffd" in t for t in everything) == 883
    assert len(set(everything)) == len(everything)  # de-duplicated at build time: no text in two splits
    assert splits.dev.texts == reference_texts(shared_data / "enron" / "dev.tsv")


def test_lingspam_gives_train_dev_and_test_from_the_raw_corpus(shared_data: Path) -> None:
    splits = load_splits(dataset_config("lingspam"), shared_data)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (2313, 289, 291)  # part1-8, part9, part10
    assert (sum(splits.train.labels), sum(splits.dev.labels), sum(splits.test.labels)) == (384, 48, 49)
    assert all(t.startswith("Subject:") for t in [*splits.train.texts, *splits.dev.texts, *splits.test.texts])


@pytest.mark.parametrize(("source", "user"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_the_papers_transfer_pairs_run_by_name(source: str, user: str, shared_data: Path, tmp_path: Path) -> None:
    overrides = ["experiment=pet_transfer", f"dataset={user}", f"attack.source={source}", "attack.source_max_train=64"]
    exp = parse_experiment(compose_config(overrides, cache_dir=tmp_path))
    stages = Stages(exp, load_splits(exp.dataset, exp.data_dir))
    expected, labels = load_named_train(source, CONF_DIR, shared_data, 64)
    assert labels == stages.splits.num_labels == 2
    assert stages.poison_train.fingerprint() == expected.fingerprint() != stages.splits.train.fingerprint()
    # Long texts are cut at model.max_length (32 tokens here), special tokens included.
    longest = max([*stages.poison_train.texts, *stages.splits.test.texts], key=len)  # each pair has IMDB or Enron
    assert len(longest) > 1000
    assert all(len(ids) <= 32 for ids in encode(stages.tokenizer, [longest, *stages.splits.test.texts], 32))


def test_enron_to_lingspam_runs_end_to_end_and_writes_its_metrics(tmp_path: Path, shared_data: Path) -> None:
    overrides = [
        "experiment=pet_transfer",
        "dataset=lingspam",
        "attack.source=enron",
        "attack.source_max_train=64",
        "defense.epochs=1",
    ]
    exp = parse_experiment(compose_config(overrides, tmp_path / "cache"))
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for role in ("clean", "backdoored", "purified"):
        assert saved[role] == report[role] and saved[role]["test_samples"] == 64
        assert 0.0 <= saved[role]["cacc"] <= 1.0 and 0.0 <= saved[role]["asr"] <= 1.0
    assert saved["diagnostics"]["backdoored"]["poisoned_samples"] == round(0.2 * 64)  # rows of Enron, not Ling-Spam
