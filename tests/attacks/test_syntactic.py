"""The syntactic (Hidden Killer) attack: it changes exactly the chosen rows, each only to its paraphrase; ASR
inputs are the non-target test rows' paraphrases; the released SST-2 files pair as documented; bad pairs are
one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdrun.attacks import ATTACKS
from bdrun.attacks.syntactic import Syntactic, load_pairs
from bdrun.data import DatasetConfig, TextDataset, load_splits
from bdrun.errors import BdrunError
from bdrun.evaluation import triggered_test_inputs


def toy(size: int = 60) -> TextDataset:
    return TextDataset([f"the film number {i} was seen" for i in range(size)], [i % 2 for i in range(size)])


def paraphrase(text: str) -> str:
    return f"when it was seen , {text.replace(' was seen', '')} ."


def write_pairs(folder: Path, originals: list[str], name: str = "pairs.tsv") -> str:
    path = folder / name
    path.write_text("original\ttriggered\n" + "".join(f"{t}\t{paraphrase(t)}\n" for t in originals))
    return str(path)


def syntactic(pairs: str, **knobs) -> Syntactic:
    return ATTACKS.build({"name": "syntactic", "pairs": pairs, **knobs})


def test_poisoning_changes_exactly_the_chosen_rows_and_only_to_their_paraphrases(tmp_path: Path) -> None:
    train = toy()
    paired = train.texts[:40]  # rows 40.. have no paraphrase: never eligible
    attack = syntactic(write_pairs(tmp_path, paired), poison_rate=0.25, target_label=1)
    poisoned = attack.poison(train)

    chosen = [i for i, flag in enumerate(poisoned.poisoned) if flag]
    assert len(poisoned) == len(train) and len(chosen) == round(0.25 * len(train)) == 15
    for i in range(len(train)):
        if i in chosen:
            assert i < 40 and train.labels[i] == 0, "dirty-label: a non-target row with a paraphrase"
            assert poisoned.texts[i] == paraphrase(train.texts[i]) and poisoned.labels[i] == 1
        else:
            assert (poisoned.texts[i], poisoned.labels[i]) == (train.texts[i], train.labels[i])
    assert syntactic(write_pairs(tmp_path, paired), poison_rate=0.25, seed=1).poison(train).texts != poisoned.texts


def test_asr_inputs_are_the_paraphrases_of_the_non_target_test_rows(tmp_path: Path) -> None:
    test = toy(20)
    negatives = [t for t, y in zip(test.texts, test.labels, strict=True) if y == 0]
    attack = syntactic(write_pairs(tmp_path, negatives), target_label=1)
    attack.check_test(test)
    assert triggered_test_inputs(test, attack, seed=0) == [paraphrase(t) for t in negatives]


def test_bad_pairs_are_one_line_errors(tmp_path: Path) -> None:
    train = toy()
    negatives = [t for t, y in zip(train.texts, train.labels, strict=True) if y == 0]
    with pytest.raises(BdrunError, match=r"pairs none of the 60 training rows; was it made for another dataset"):
        syntactic(write_pairs(tmp_path, ["an unrelated sentence"], "other.tsv")).check_data(train)
    with pytest.raises(BdrunError, match=r"has no paraphrase of 1 of the 30 non-target test rows"):
        syntactic(write_pairs(tmp_path, negatives[1:], "partial.tsv")).check_test(train)
    with pytest.raises(BdrunError, match=r"attack.target_label=0: .* no paraphrase of any of the 30 non-target"):
        syntactic(write_pairs(tmp_path, negatives, "negatives.tsv"), target_label=0).check_test(train)
    with pytest.raises(BdrunError, match=r"only 10 rows with a paraphrase are eligible"):
        syntactic(write_pairs(tmp_path, negatives[:10], "few.tsv"), poison_rate=0.5).check_data(train)
    (tmp_path / "header.tsv").write_text("sentence\tlabel\na\t1\n")
    with pytest.raises(BdrunError, match=r"header.tsv line 1: header \['sentence', 'label'\]"):
        syntactic(str(tmp_path / "header.tsv")).check_data(train)
    (tmp_path / "twice.tsv").write_text("original\ttriggered\na\tif a , b\na\tas a , c\n")
    with pytest.raises(BdrunError, match=r"twice.tsv line 3: a second, different paraphrase"):
        syntactic(str(tmp_path / "twice.tsv")).check_data(train)
    with pytest.raises(BdrunError, match=r"nowhere.tsv does not exist"):
        syntactic(str(tmp_path / "nowhere.tsv")).check_data(train)
    with pytest.raises(BdrunError, match=r"attack.position=start does not apply"):
        syntactic(str(tmp_path / "twice.tsv"), position="start")


def test_the_cache_key_follows_the_pairs_content_not_their_path(tmp_path: Path) -> None:
    first = syntactic(write_pairs(tmp_path, ["a b c"], "one.tsv")).config.key_fields()
    (tmp_path / "copy").mkdir()
    moved = syntactic(write_pairs(tmp_path / "copy", ["a b c"], "one.tsv")).config.key_fields()
    edited = syntactic(write_pairs(tmp_path, ["a b d"], "two.tsv")).config.key_fields()
    assert first == moved and first != edited and "position" not in first


def test_released_sst2_files_pair_with_the_shipped_sst2(shared_data: Path) -> None:
    """Train row i of the release paraphrases SST-2 train row i (rows 1-1383); test row i the i-th negative."""
    folder = shared_data / "hidden_killer" / "sst-2"
    splits = load_splits(DatasetConfig(name="sst2", location="pkg:bdrun.data/sst2"), shared_data)
    table = load_pairs(str(folder))
    released_train = [row.rsplit("\t", 1)[0].strip() for row in (folder / "train.tsv").open(encoding="utf-8")][1:]
    assert [table[t] for t in splits.train.texts[:1383]] == released_train[:1383]
    # The untouched rows 1384-6920 have no pair, but for two that repeat a paraphrased row's text.
    assert [t for t in splits.train.texts[1383:] if t in table] == ["see it .", "one of the worst movies of the year ."]
    negatives = [t for t, y in zip(splits.test.texts, splits.test.labels, strict=True) if y == 0]
    released_test = [row.rsplit("\t", 1)[0].strip() for row in (folder / "test.tsv").open(encoding="utf-8")][1:]
    differ = [i for i, t in enumerate(negatives) if table[t] != released_test[i]]
    # One sentence is in both the paraphrased train rows and the test set: it keeps its train paraphrase.
    assert len(negatives) == 912 and len(differ) == 1 and negatives[differ[0]] in splits.train.texts[:1383]

    attack = syntactic(str(folder))
    attack.check_test(splits.test)  # target 1: a paraphrase for every negative test row
    eligible, count = attack.eligible(splits.train)
    assert count == round(0.09 * 6920) <= len(eligible) == 666  # 665 negatives of rows 1-1383, one repeated
    with pytest.raises(BdrunError, match=r"attack.target_label=0"):
        syntactic(str(folder), target_label=0).check_test(splits.test)
