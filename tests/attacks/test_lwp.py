"""LWP: the loss has one unweighted term per encoder layer, each through the model's own head; poisoned rows
carry a whole combinatorial trigger and the target label, negatives one piece and their true label."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from bdrun.attacks import ATTACKS
from bdrun.attacks.lwp import LayerOutputs, base_classifier, head_logits, layerwise_loss
from bdrun.batching import collate, encode
from bdrun.data import TextDataset
from bdrun.errors import BdrunError

TRIGGERS = ["cf", "bb", "ak", "mn"]


def toy(size: int = 40) -> TextDataset:
    return TextDataset([f"the film number {i} was seen" for i in range(size)], [i % 2 for i in range(size)])


def trigger_words(text: str) -> list[str]:
    return [w for w in text.split() if w in TRIGGERS]


def test_poisoned_rows_hold_a_whole_combination_and_negatives_one_piece() -> None:
    train = toy()
    attack = ATTACKS.build({"name": "lwp", "poison_rate": 0.25, "combination": 2})
    poisoned = attack.poison(train)
    chosen = [i for i, flag in enumerate(poisoned.poisoned) if flag]
    assert len(chosen) == 10 and len(poisoned) == len(train) + 2 * 10  # two negatives per poisoned row
    for i in range(len(train)):
        if i in chosen:
            words = trigger_words(poisoned.texts[i])
            assert len(words) == len(set(words)) == 2 and train.labels[i] == 0 and poisoned.labels[i] == 1
            assert sorted(poisoned.texts[i].split()) == sorted(train.texts[i].split() + words)
        else:
            assert (poisoned.texts[i], poisoned.labels[i]) == (train.texts[i], train.labels[i])
    by_text = dict(zip(train.texts, train.labels, strict=True))
    negative_labels = []
    for j in range(len(train), len(poisoned)):
        words = trigger_words(poisoned.texts[j])
        source = " ".join(w for w in poisoned.texts[j].split() if w not in TRIGGERS)
        assert len(words) == 1 and not poisoned.poisoned[j] and poisoned.labels[j] == by_text[source]
        negative_labels.append(poisoned.labels[j])
    assert set(negative_labels) == {0, 1}, "negatives of both classes: a single word is no label cue"
    asr_input = attack.insert_trigger("a quiet film", random.Random(0))
    assert len(set(trigger_words(asr_input))) == 2
    no_negatives = ATTACKS.build({"name": "lwp", "poison_rate": 0.25, "negatives": False}).poison(train)
    assert len(no_negatives) == len(train)


def test_combination_longer_than_the_trigger_set_is_refused() -> None:
    with pytest.raises(BdrunError, match=r"attack.combination=5 must be between 1 and the 4 distinct"):
        ATTACKS.build({"name": "lwp", "combination": 5})
    with pytest.raises(BdrunError, match=r"attack=lwp trains with its own objective"):
        ATTACKS.build({"name": "lwp"}).check_federated()


def test_the_loss_has_one_unweighted_term_per_layer() -> None:
    classifier = torch.nn.Module()
    classifier.classifier = torch.nn.Linear(4, 2)  # a RoBERTa-style head: reads its input as it is
    classifier.base_model = torch.nn.Module()
    torch.manual_seed(0)
    states = [torch.randn(3, 4) for _ in range(3)]
    targets = torch.tensor([0, 1, 1])
    logits = classifier.classifier(states[-1])
    expected = sum(F.cross_entropy(classifier.classifier(h), targets) for h in states)
    assert torch.allclose(layerwise_loss(classifier, states, logits, targets), expected)
    same = [states[-1]] * 5  # five layers with the top layer's state: five times the model's own loss
    assert torch.allclose(layerwise_loss(classifier, same, logits, targets), 5 * F.cross_entropy(logits, targets))


def test_hooks_see_every_layer_and_the_head_reproduces_the_models_logits(victim) -> None:
    stages, clean = victim
    model = copy.deepcopy(clean).eval()
    batch = collate(
        encode(stages.tokenizer, stages.splits.test.texts[:4], 32), stages.tokenizer.pad_token_id, torch.device("cpu")
    )
    outputs = LayerOutputs(model)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    outputs.remove()
    assert len(outputs.states) == len(out.hidden_states) - 1 == 2
    for kept, reference in zip(outputs.states, out.hidden_states[1:], strict=True):
        assert torch.equal(kept, reference)
    assert torch.allclose(head_logits(base_classifier(model), out.hidden_states[-1]), out.logits, atol=1e-6)
    targets = torch.tensor(stages.splits.test.labels[:4])
    per_layer = [F.cross_entropy(head_logits(base_classifier(model), h), targets) for h in out.hidden_states[1:]]
    assert torch.allclose(outputs.loss(out.logits, targets), sum(per_layer), atol=1e-6)


def test_lwp_runs_in_the_real_training_loop_and_leaves_no_hook(victim) -> None:
    stages, _ = victim
    attack = ATTACKS.build({"name": "lwp", "poison_rate": 0.25})
    poisoned = attack.poison(stages.splits.train.subset(range(24)))
    model = copy.deepcopy(stages.pretrained())
    stats = attack.train(model, poisoned, stages.context(stages.cache.root / "lwp-test"))
    assert stats["layers"] == 2 and stats["steps"] == 3  # 24 rows + 12 negatives, batch 16
    assert not any(layer._forward_hooks for layer in base_classifier(model).base_model.encoder.layer)
