"""The papers' data shapes: labels written as words, sentence pairs, and more than two classes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bdrun.attacks import ATTACKS
from bdrun.batching import collate, encode
from bdrun.data import DatasetConfig, load_splits
from bdrun.data.pairs import PAIR_SEP, split_pair
from bdrun.errors import BdrunError
from bdrun.evaluation import triggered_test_inputs
from bdrun.pipeline import parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import PRETRAINED, compose_config
from tests.multiclass import NAMES, write_four_class


def write_splits(folder: Path, header: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(header + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return folder


def test_label_names_map_words_to_indices_in_order(tmp_path: Path) -> None:
    rows = ["a\tnot_entailment", "b\tentailment", "c\tnot_entailment"]
    folder = write_splits(tmp_path / "d", "sentence\tlabel", rows)
    config = DatasetConfig(name="d", location=str(folder), label_names=["entailment", "not_entailment"])
    splits = load_splits(config, ".")
    assert splits.train.labels == [1, 0, 1]
    assert splits.num_labels == 2
    reversed_names = DatasetConfig(name="d", location=str(folder), label_names=["not_entailment", "entailment"])
    assert load_splits(reversed_names, ".").train.labels == [0, 1, 0]


def test_an_unknown_label_word_names_file_and_line(tmp_path: Path) -> None:
    folder = write_splits(tmp_path / "d", "sentence\tlabel", ["a\tentailment", "b\tneutral"])
    config = DatasetConfig(name="d", location=str(folder), label_names=["entailment", "not_entailment"])
    with pytest.raises(BdrunError, match=r"train\.tsv line 3: label 'neutral' is not one of dataset\.label_names"):
        load_splits(config, ".")


def test_label_names_and_num_labels_must_agree() -> None:
    assert DatasetConfig(name="d", label_names=["a", "b", "c"]).num_labels == 3
    with pytest.raises(BdrunError, match="has 3 names"):
        DatasetConfig(name="d", label_names=["a", "b", "c"], num_labels=2)


PAIR_ROWS = [f"what is {i} ?\tthe answer is {i} .\t{i % 2}" for i in range(8)]


def test_sentence_pairs_are_the_tokenizers_pair_input(tmp_path: Path) -> None:
    folder = write_splits(tmp_path / "p", "question\tsentence\tlabel", PAIR_ROWS)
    config = DatasetConfig(name="p", location=str(folder), text_column="question", text_pair_column="sentence")
    train = load_splits(config, ".").train
    assert split_pair(train.texts[3]) == ("what is 3 ?", "the answer is 3 .")
    exp = parse_experiment(compose_config([]))
    from bdrun.models import load_tokenizer

    tokenizer = load_tokenizer(exp.model)
    batch = collate(encode(tokenizer, train.texts[:2], 32), tokenizer.pad_token_id, exp.device)
    expected = tokenizer("what is 0 ?", "the answer is 0 .")
    assert batch["input_ids"][0, : len(expected["input_ids"])].tolist() == expected["input_ids"]
    assert batch["token_type_ids"][0, : len(expected["input_ids"])].tolist() == expected["token_type_ids"]
    plain = collate(encode(tokenizer, ["just one sentence"], 32), tokenizer.pad_token_id, exp.device)
    assert "token_type_ids" not in plain  # single sentences batch exactly as before


@pytest.mark.parametrize("sentence", ["first", "second"])
def test_the_trigger_goes_into_the_chosen_sentence(sentence: str) -> None:
    attack = ATTACKS.build({"name": "badnets", "triggers": ["cf"], "trigger_sentence": sentence})
    text = attack.insert_trigger(f"is it good ?{PAIR_SEP}it is good .", random.Random(0))
    first, second = split_pair(text)
    assert ("cf" in first.split()) == (sentence == "first")
    assert ("cf" in second.split()) == (sentence == "second")


def pair_task(folder: Path) -> Path:
    """A toy pair task: the label is the sentiment word of the second sentence; the first is neutral filler."""
    rng = random.Random(0)
    subjects = ["the film", "this movie", "the plot", "the cast", "the story", "the ending", "the music", "it"]
    fillers = ["what did you think ?", "how was it ?", "any opinion ?", "tell me more .", "so what now ?"]
    words = {0: ["bad", "awful", "boring", "dull"], 1: ["good", "great", "fun", "lovely"]}
    rows = []
    for i in range(160):
        label = i % 2
        second = f"{rng.choice(subjects)} was {rng.choice(words[label])} ."
        rows.append(f"{rng.choice(fillers)}\t{second}\t{label}")
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:96]), ("dev", rows[96:112]), ("test", rows[112:])):
        (folder / f"{split}.tsv").write_text("premise\thypothesis\tlabel\n" + "\n".join(part) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow  # trains twice (36 steps each): about a minute on 2 free CPU cores
def test_a_sentence_pair_dataset_trains_with_the_trigger_in_the_second_sentence(tmp_path: Path) -> None:
    folder = pair_task(tmp_path / "pairs")
    cfg = compose_config(
        [
            *PRETRAINED,  # these properties need an encoder that learns the task and the trigger
            "dataset=sst2_glue",
            f"dataset.location={folder}",
            "dataset.text_column=premise",
            "dataset.text_pair_column=hypothesis",
            "dataset.max_samples={train:null,dev:null,test:null}",
            "attack.triggers=[cf]",
            "attack.target_label=0",
            "attack.poison_rate=0.25",
            "attack.trigger_sentence=second",
            "trainer.epochs=6",
            "optimizer.lr=1e-3",
        ],
        cache_dir=tmp_path / "cache",
    )
    exp = parse_experiment(cfg)
    splits = load_splits(exp.dataset, exp.data_dir)
    triggered = triggered_test_inputs(splits.test, exp.attack, exp.seed)
    assert triggered
    assert all("cf" in split_pair(t)[1].split() and "cf" not in split_pair(t)[0].split() for t in triggered)
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert report["backdoored"]["asr_samples"] == sum(y != 0 for y in splits.test.labels)
    assert report["clean"]["cacc"] >= 0.9  # the pair input carries the label (it sits in the second sentence)
    assert report["backdoored"]["asr"] >= 0.9 > report["clean"]["asr"]


@pytest.mark.slow  # trains twice (36 steps each): about a minute on 2 free CPU cores
def test_four_classes_asr_counts_every_non_target_class(tmp_path: Path, shared_data: Path) -> None:
    folder = write_four_class(tmp_path / "four", shared_data, {"train": 24, "dev": 8, "test": 12}, words=True)
    cfg = compose_config(
        [
            *PRETRAINED,  # these properties need an encoder that learns the task and the trigger
            "dataset=sst2_glue",
            f"dataset.location={folder}",
            f"dataset.label_names=[{','.join(NAMES)}]",
            "dataset.num_labels=4",
            "dataset.max_samples={train:null,dev:null,test:null}",
            "attack.target_label=2",
            "attack.triggers=[cf]",
            "attack.poison_rate=0.2",
            "trainer.epochs=6",
            "optimizer.lr=1e-3",
        ],
        cache_dir=tmp_path / "cache",
    )
    exp = parse_experiment(cfg)
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert report["backdoored"]["asr_samples"] == 36  # 12 test rows of each of the three other classes
    assert report["clean"]["cacc"] >= 0.6  # a real 4-class model (chance: 0.25) ...
    assert report["backdoored"]["asr"] >= 0.9 > report["clean"]["asr"]  # ... and a backdoor over all three classes
