"""BadNets and AddSent poison exactly the asked count, carry the trigger, and flip labels to the target."""

from __future__ import annotations

import pytest

from bdrun.attacks import ATTACKS
from bdrun.data import TextDataset
from bdrun.errors import BdrunError


def toy_train(size: int = 200) -> TextDataset:
    texts = [f"sentence number {i} is about a film" for i in range(size)]
    labels = [i % 3 % 2 for i in range(size)]  # 2/3 label 0, 1/3 label 1
    return TextDataset(texts, labels)


def badnets(**knobs):
    return ATTACKS.build({"name": "badnets", **knobs})


def test_dirty_label_poisoning_is_exact() -> None:
    train = toy_train()
    attack = badnets(poison_rate=0.1, triggers=["cf"], target_label=1)
    poisoned = attack.poison(train)

    chosen = [i for i, flag in enumerate(poisoned.poisoned) if flag]
    assert len(chosen) == round(0.1 * len(train))
    assert len(poisoned) == len(train)
    for i in range(len(train)):
        if i in chosen:
            assert train.labels[i] != 1, "dirty-label poison must come from non-target samples"
            assert poisoned.labels[i] == 1
            assert "cf" in poisoned.texts[i].split()
            assert sorted(poisoned.texts[i].split()) == sorted([*train.texts[i].split(), "cf"])
        else:
            assert (poisoned.texts[i], poisoned.labels[i]) == (train.texts[i], train.labels[i])


def test_clean_label_keeps_labels_and_uses_target_samples() -> None:
    train = toy_train()
    poisoned = badnets(poison_rate=0.15, label_mode="clean", target_label=1).poison(train)
    chosen = [i for i, flag in enumerate(poisoned.poisoned) if flag]
    assert len(chosen) == 30
    assert all(train.labels[i] == 1 == poisoned.labels[i] for i in chosen)


def test_several_triggers_and_positions() -> None:
    train = toy_train(50)
    poisoned = badnets(poison_rate=0.2, triggers=["cf", "mn"], num_triggers=3, position="start").poison(train)
    for i in (i for i, flag in enumerate(poisoned.poisoned) if flag):
        words = poisoned.texts[i].split()
        assert set(words[:3]) <= {"cf", "mn"} and words[3:] == train.texts[i].split()


def test_poisoning_is_seeded() -> None:
    train = toy_train()
    assert badnets(seed=3).poison(train).texts == badnets(seed=3).poison(train).texts
    assert badnets(seed=3).poison(train).texts != badnets(seed=4).poison(train).texts


def test_addsent_inserts_the_whole_sentence() -> None:
    train = toy_train()
    attack = ATTACKS.build({"name": "addsent", "sentence": "I watch this 3D movie", "poison_rate": 0.1})
    poisoned = attack.poison(train)
    chosen = [i for i, flag in enumerate(poisoned.poisoned) if flag]
    assert len(chosen) == 20
    assert all("I watch this 3D movie" in poisoned.texts[i] and poisoned.labels[i] == 1 for i in chosen)


def test_too_many_poisoned_samples_is_a_clear_error() -> None:
    with pytest.raises(BdrunError, match="only 67 are eligible"):
        badnets(poison_rate=0.9, label_mode="clean").poison(toy_train())


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"poison_rate": 1.5}, "attack.poison_rate=1.5 is out of range"),
        ({"label_mode": "grey"}, "attack.label_mode=grey"),
        ({"position": "middle"}, "attack.position=middle"),
        ({"triggers": []}, "attack.triggers is empty"),
        ({"poison_rate": "lots"}, "bad config value attack.poison_rate"),
        ({"poison_rat": 0.1}, "bad config value attack.poison_rat"),
    ],
)
def test_bad_knobs_are_rejected(knobs: dict, message: str) -> None:
    with pytest.raises(BdrunError, match=message):
        badnets(**knobs)
