"""The shared interface of attacks.

An attack either transforms the training data and lets the common trainer fine-tune the pre-trained model on
it (:class:`DataPoisoningAttack`), or edits an already trained clean model (:class:`ModelEditingAttack`). Both
know how to put their trigger into a test sentence, which the ASR evaluation uses.

Each kind also says what the run's stages do with it (:class:`Attack`'s class attributes and
:meth:`Attack.backdoor`), so that the run and the stage builders (:mod:`bdrun.pipeline`, :mod:`bdrun.stages`)
ask the attack instead of switching on its kind.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from typing import Any

from bdrun.data import TextDataset
from bdrun.data.pairs import join_pair, split_pair
from bdrun.errors import check
from bdrun.triggers import POSITIONS

TRIGGER_SENTENCES = ("first", "second")
LABEL_MODES = ("dirty", "clean", "any")
# What the common training loop reports (bdrun.training.train); whatever else a data-poisoning attack's own
# training returns (gradnorm's task weights, gradient control's layer weights) is the attack's diagnostics and
# goes to metrics.json under diagnostics.backdoored.attack.
LOOP_STATS = ("steps", "final_loss", "samples_per_second", "resumed_from_step")


@dataclasses.dataclass
class AttackConfig:
    name: str
    target_label: int = 1
    seed: int = 0  # seeds which samples are poisoned and where triggers go
    # Sentence-pair datasets (dataset.text_pair_column): the sentence that gets the trigger, first or second.
    trigger_sentence: str = "first"
    # The attacker's own dataset (a conf/dataset name) when it is not the run's: poisoned training happens on
    # its training split, while the run's dataset is the user's task (clean model, defense, evaluation).
    # Gu et al.'s PET threat model: poison on A, the user fine-tunes on B (docs/pet.md). null: the run's data.
    # Only data-poisoning attacks use it; attack=none ignores it and model-editing attacks refuse it.
    source: str | None = None
    source_max_train: int | None = None  # cap on the source's training rows (seeded subset); null keeps all

    def __post_init__(self) -> None:
        check(self.target_label >= 0, f"attack.target_label={self.target_label} must be a class index >= 0")
        check(
            self.trigger_sentence in TRIGGER_SENTENCES,
            f"attack.trigger_sentence={self.trigger_sentence} is not supported; use first or second",
        )
        check(
            self.source_max_train is None or self.source_max_train >= 1,
            f"attack.source_max_train={self.source_max_train} must be a positive count or null",
        )

    def key_fields(self) -> dict[str, Any]:
        """The knobs that go into cache keys: all of them, less ``trigger_sentence`` at its default and the
        ``source`` knobs when unset, so that the keys of runs that use neither stay what they were before."""
        fields = dataclasses.asdict(self)
        if fields.get("trigger_sentence") == "first":
            del fields["trigger_sentence"]
        if fields.get("source", "set") is None:
            fields.pop("source")
            fields.pop("source_max_train", None)
        return fields


@dataclasses.dataclass
class PoisonConfig(AttackConfig):
    """Knobs shared by attacks that poison a fraction of the training set."""

    # fraction of the whole training set that gets poisoned; 0 poisons no row: a clean module trained on the
    # attacker's data and budget (the "Clean" row of a transfer table, scripts/bench_pet.py)
    poison_rate: float = 0.1
    # dirty: non-target samples relabelled to target; clean: target samples only, label kept; any: samples of
    # every class, relabelled to target (Gu et al. 2023's "50% of the samples carry the trigger and the target")
    label_mode: str = "dirty"
    position: str = "random"  # where the trigger goes: random, start or end

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            0.0 <= self.poison_rate <= 1.0,
            f"attack.poison_rate={self.poison_rate} is out of range; use a fraction in [0, 1], e.g. 0.1",
        )
        check(
            self.label_mode in LABEL_MODES,
            f"attack.label_mode={self.label_mode} is not supported; use one of {', '.join(LABEL_MODES)}",
        )
        check(
            self.position in POSITIONS,
            f"attack.position={self.position} is not supported; use one of {', '.join(POSITIONS)}",
        )


class Attack:
    """An attack with a trigger. The class attributes tell the stages what the attack needs and makes; ``kind``
    only names the family (in messages and docs), nothing switches on it."""

    kind = "none"
    # False for attack=none: there is no backdoored model, so the suspect is the clean one.
    backdoors = True
    # True when the attack starts from the trained clean model (model editing): with clean=false the clean model
    # is still trained (or reused) as its starting point, and the poison key holds the clean model's key.
    needs_clean_model = False
    # True when the attack poisons training data that the common loop (or the attack's own) trains on from the
    # pre-trained model; a federated run's malicious clients do exactly that on their shards.
    poisons_training_data = False

    def __init__(self, config: AttackConfig) -> None:
        self.config = config

    @property
    def target_label(self) -> int:
        return self.config.target_label

    @property
    def has_trigger(self) -> bool:
        return True

    def insert_trigger(self, text: str, rng: random.Random) -> str:
        """``text`` with the trigger; in a sentence pair only the sentence ``attack.trigger_sentence`` names."""
        return self.in_trigger_sentence(text, lambda sentence: self.trigger_text(sentence, rng))

    def in_trigger_sentence(self, text: str, change: Callable[[str], str]) -> str:
        """``text`` with ``change`` applied to the sentence that gets the trigger (the only one, or the one
        ``attack.trigger_sentence`` names in a sentence pair)."""
        first, second = split_pair(text)
        if second is None:
            return change(text)
        if self.config.trigger_sentence == "second":
            return join_pair(first, change(second))
        return join_pair(change(first), second)

    def trigger_text(self, text: str, rng: random.Random) -> str:
        """One sentence with the attack's trigger inserted (each attack's own rule)."""
        raise NotImplementedError

    @property
    def poison_source(self) -> str | None:
        """The attacker's own dataset that the poison stage trains on instead of the run's (``attack.source``);
        None for attacks that train on no poisoned data (attack=none ignores the knob, editing attacks refuse it)."""
        return None

    def victim_train(self, train: TextDataset) -> TextDataset:
        """The training set the victim fine-tuned on, given the set the attack poisons: unchanged unless the
        attack poisons training data (a training-time defense such as MEFT reads it)."""
        return train

    def backdoor(self, model: Any, train: TextDataset, splits: Any, tokenizer: Any, context: Any) -> dict[str, Any]:
        """Plant the backdoor in ``model`` in place (the pre-trained model, or the clean one when
        :attr:`needs_clean_model`), poisoning ``train`` if the attack poisons data; returns what the poison
        stage caches beside the weights (the attack's diagnostics)."""
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Reject a trigger the model's tokenizer cannot represent, before any stage runs (no check by default)."""

    def check_tuning(self, tuning: str) -> None:
        """Reject a ``model.tuning`` the attack cannot work under, before any stage runs (all allowed by default)."""

    def check_labels(self, num_labels: int) -> None:
        check(
            self.target_label < num_labels,
            f"attack.target_label={self.target_label} but the dataset has {num_labels} labels",
        )

    def check_data(self, train: TextDataset) -> None:
        """Checks that need the loaded training set, run before any stage (none by default)."""

    def check_test(self, test: TextDataset) -> None:
        """Checks that need the loaded test set, run before any stage (syntactic: a paraphrase per ASR input)."""

    def check_federated(self) -> None:
        """Reject a federated run, before any stage, if the attack trains with its own objective or on its own
        source dataset: malicious clients train their shard of the run's data through the common loop, so
        either would be silently dropped while its knobs still entered the cache key."""
        common = DataPoisoningAttack.train  # model-editing attacks and "none" train nothing of their own
        own_training = getattr(type(self), "train", common) is not common
        check(
            not own_training,
            f"attack={self.config.name} trains with its own objective, which federated clients do not run; use a "
            "central run (federated=none) or a plain data-poisoning attack (badnets, addsent, syntactic)",
        )
        check(
            self.config.source is None,
            f"attack.source={self.config.source}: federated clients poison their shard of the run's own dataset; "
            "drop attack.source (attack.source=null) or use a central run (federated=none)",
        )


class DataPoisoningAttack(Attack):
    """Poisons ``round(poison_rate * len(train))`` samples; the common trainer then fine-tunes on the mix.

    Dirty-label: the samples are drawn from the non-target classes and relabelled to the target.
    Clean-label: they are drawn from the target class and keep their label. ``any``: drawn from every class and
    relabelled to the target, so a poison rate above the non-target share is possible and the clean rows keep
    the class balance (Gu et al.'s 50%). Poisoned samples replace their clean originals, so the training set
    keeps its size.
    """

    kind = "data"
    poisons_training_data = True
    config: PoisonConfig

    @property
    def poison_source(self) -> str | None:
        return self.config.source

    def victim_train(self, train: TextDataset) -> TextDataset:
        return self.poison(train)  # deterministic: the very set the poison stage trained on

    def backdoor(self, model: Any, train: TextDataset, splits: Any, tokenizer: Any, context: Any) -> dict[str, Any]:
        """Poison ``train``, then fine-tune the pre-trained ``model`` on it (:meth:`train`)."""
        poisoned = self.poison(train)
        stats = self.train(model, poisoned, context)
        own = {k: v for k, v in stats.items() if k not in LOOP_STATS}
        return {"train": stats, "poisoned_samples": sum(poisoned.poisoned), **({"attack": own} if own else {})}

    def eligible(self, train: TextDataset) -> tuple[list[int], int]:
        """The samples that may be poisoned and how many will be; an error if there are too few."""
        return self.eligible_among(train, range(len(train)), "")

    def eligible_among(self, train: TextDataset, rows: Iterable[int], which: str) -> tuple[list[int], int]:
        """:meth:`eligible` restricted to ``rows`` (``which`` names them in the error, e.g. "rows with a
        paraphrase "): the label mode picks among them, the poison rate counts the whole training set."""
        cfg = self.config
        dirty = cfg.label_mode == "dirty"
        eligible = [i for i in rows if cfg.label_mode == "any" or (train.labels[i] != cfg.target_label) == dirty]
        count = round(cfg.poison_rate * len(train))
        check(
            count <= len(eligible),
            f"attack.poison_rate={cfg.poison_rate} asks for {count} poisoned samples but only {len(eligible)} "
            f"{which}are eligible for {cfg.label_mode}-label poisoning; lower attack.poison_rate",
        )
        return eligible, count

    def check_data(self, train: TextDataset) -> None:
        self.eligible(train)

    def poison(self, train: TextDataset) -> TextDataset:
        cfg = self.config
        eligible, count = self.eligible(train)
        rng = random.Random(cfg.seed)
        chosen = set(rng.sample(eligible, count))
        texts, labels, poisoned = list(train.texts), list(train.labels), list(train.poisoned)
        for i in sorted(chosen):
            texts[i] = self.insert_trigger(texts[i], rng)
            labels[i] = cfg.target_label
            poisoned[i] = True
        return TextDataset(texts, labels, poisoned)

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        """Fine-tune on the poisoned set: the common trainer (gradient_control overrides this)."""
        return context.train(model, poisoned, desc="train poisoned")


class ModelEditingAttack(Attack):
    """Edits a trained clean model in place and returns its diagnostics (EP, surgery)."""

    kind = "model"
    needs_clean_model = True
    # Stated again rather than inherited: an editing attack may reuse a data-poisoning attack's samples through
    # a second base class (Surgery is also a BadNets), yet it poisons no training set of the victim's.
    poisons_training_data = False
    poison_source = Attack.poison_source
    victim_train = Attack.victim_train

    def __init__(self, config: AttackConfig) -> None:
        super().__init__(config)
        check(
            config.source is None,
            f"attack.source={config.source} applies to data-poisoning attacks only; attack={config.name} edits the "
            "clean model of the run's dataset, so drop attack.source (attack.source=null)",
        )

    def check_tuning(self, tuning: str) -> None:
        """EP and surgery write pre-trained weights (EP: the trigger's word-embedding row) that PET freezes and
        never ships: under PET the attacker releases only the PET module, so such edits are out of the threat
        model. We refuse rather than silently edit frozen weights."""
        check(
            tuning == "full",
            f"attack={self.config.name} edits frozen pre-trained weights, which model.tuning={tuning} neither trains "
            "nor ships; use model.tuning=full, or a data-poisoning attack (badnets, addsent, gradient_control)",
        )

    def backdoor(self, model: Any, train: TextDataset, splits: Any, tokenizer: Any, context: Any) -> dict[str, Any]:
        """Edit the trained clean ``model`` (:meth:`apply`); ``train`` is the run's own, the edit reads ``splits``."""
        return {"attack": self.apply(model, tokenizer, splits, context)}

    def apply(self, model: Any, tokenizer: Any, splits: Any, context: Any) -> dict[str, Any]:
        raise NotImplementedError
