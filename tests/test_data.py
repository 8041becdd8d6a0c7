"""Every dataset parses to its documented row counts, and bad data is rejected with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdrun.data import DatasetConfig, load_splits
from bdrun.errors import BdrunError
from bdrun.registry import parse_config
from tests.conftest import compose_config


def dataset_config(name: str, **overrides) -> DatasetConfig:
    node = compose_config([f"dataset={name}", "dataset.max_samples={train:null,dev:null,test:null}"]).dataset
    config = parse_config(DatasetConfig, node, "dataset")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def counts(data) -> tuple[int, int]:
    return data.labels.count(0), data.labels.count(1)


def test_shipped_sst2_matches_its_provenance() -> None:
    splits = load_splits(dataset_config("sst2"), data_dir="/nonexistent")  # needs no data dir
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (6920, 872, 1821)
    assert counts(splits.train) == (3310, 3610)
    assert counts(splits.test) == (912, 909)
    assert all(not t.endswith(("\r", " ")) for t in splits.train.texts)


def test_sst2_glue(shared_data: Path) -> None:
    splits = load_splits(dataset_config("sst2_glue"), shared_data)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (60614, 6735, 872)
    assert counts(splits.train) == (26786, 33828)
    assert all(t == t.strip() for t in splits.test.texts)  # trailing spaces stripped


def test_hate_speech_with_spaced_separators(shared_data: Path) -> None:
    splits = load_splits(dataset_config("hate_speech"), shared_data)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (7074, 1000, 2000)
    assert counts(splits.train) == (6208, 866)
    assert counts(splits.test) == (1790, 210)


def test_lingspam_raw_folders(shared_data: Path) -> None:
    splits = load_splits(dataset_config("lingspam"), shared_data)
    total = len(splits.train) + len(splits.dev) + len(splits.test)
    assert total == 2893
    assert sum(splits.train.labels) + sum(splits.dev.labels) + sum(splits.test.labels) == 481
    assert len(splits.test) == 291  # part10
    assert all(t.startswith("Subject:") for t in splits.test.texts)


def test_quoted_lingspam_tsv(shared_data: Path) -> None:
    config = dataset_config(
        "sst2_glue",
        location=str(shared_data / "lingspam"),
        quoting=True,
        text_column="Sentence",
        label_column="Label",
        files={"train": ["test.tsv"], "dev": ["test.tsv"], "test": ["test.tsv"]},
    )
    test = load_splits(config, shared_data).test
    assert len(test) == 580
    assert counts(test) == (483, 97)
    raw = (shared_data / "lingspam" / "test.tsv").read_text(encoding="utf-8")
    assert '""' in raw and not any('""' in t for t in test.texts)  # doubled inner quotes unescaped


def write_split_files(folder: Path, body: str, header: str = "sentence\tlabel") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(f"{header}\r\n{body}", encoding="utf-8")


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        ("good film\t1\r\nbad film\t7\r\n", "sentence\tlabel", "label 7 is outside 0..1"),
        ("good film\tyes\r\n", "sentence\tlabel", "label 'yes' is not an integer"),
        ("good film\t1\r\n", "text\tlabel", "no column 'sentence'"),
        ("", "sentence\tlabel", "split is empty"),
        ("good\tfilm\t1\r\n", "sentence\tlabel", "3 fields where the header has 2"),
    ],
)
def test_bad_data_is_rejected_clearly(tmp_path: Path, body: str, header: str, message: str) -> None:
    write_split_files(tmp_path / "sst2_glue", body, header)
    with pytest.raises(BdrunError, match=message):
        load_splits(dataset_config("sst2_glue"), tmp_path)


def test_missing_data_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BdrunError, match=r"paths\.data_dir"):
        load_splits(dataset_config("sst2_glue"), tmp_path / "nowhere")


def test_max_samples_is_a_seeded_subset() -> None:
    config = dataset_config("sst2")
    config.max_samples = {"train": 100, "dev": None, "test": 50}
    first, second = load_splits(config, "."), load_splits(config, ".")
    assert len(first.train) == 100 and len(first.test) == 50
    assert first.train.texts == second.train.texts
