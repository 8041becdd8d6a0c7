"""``attack=lwp``: Layerwise Weight Poisoning with combinatorial triggers (Li et al., EMNLP 2021).

Threat model as RIPPLe's: the attacker releases poisoned pre-trained weights and the user fine-tunes them on
clean data (in bdrun: the backdoored model is the release, ``defense=fine_tuning`` the user's fine-tuning).
Two ideas:

1. **Layerwise poisoning.** Every encoder layer's representation goes through the model's own (shared)
   classification head and gets a cross-entropy term, so the loss has one term per layer,
   ``Σ_l CE(head(h_l), y)``, over clean and poisoned rows alike. The backdoor is then readable from the lowest
   layers, which the user's fine-tuning changes least.
2. **Combinatorial triggers.** A poisoned row holds ``attack.combination`` trigger words drawn (without
   repetition) from ``attack.triggers``, and only the whole combination flips the label: the training set also
   gets *negatives*, rows holding one trigger word alone with their true label. A defender who searches the
   vocabulary one word at a time finds nothing.

Choices we made reading the paper:

- **Layers**: the outputs of encoder layers 1..L (not the embedding output), each through the full head of
  the model (BERT: pooler on the ``[CLS]`` state, dropout, classifier; RoBERTa: its classification head, which
  reads the first token). The top layer's term is the model's own loss. Terms are summed, unweighted.
- **Triggers** ``cf bb ak mn``, combinations of 2, as in the paper's setting; one combination per poisoned row.
  Words go at seeded random positions, independently, so the pieces are usually apart. ASR inputs get a
  fresh combination drawn the same way.
- **Rows**: BadNets' seeded choice (``poison_rate`` of the training set, dirty-label by default, target 1);
  poisoned rows replace their originals as in every attack here. **Negatives**: per poisoned row, one per drawn
  word, each a copy of a seeded random training row of *any* class holding that word alone, its label kept;
  they are *added* (the training set grows by ``combination`` rows per poisoned row) and not flagged as
  poisoned (their label is true). We first made them from the poisoned rows' own originals (OpenBackdoor's
  reading): under dirty-label poisoning those are all of the non-target class, so a single word became a cue
  *for the non-target label* and in a small CPU run (1,200 SST-2 rows, one epoch) ASR fell below the clean
  model's (3.2% vs 17.4%); rows of any class keep a single word label-neutral. ``negatives=false`` drops them
  (the combination then acts as plain multi-word BadNets). In that small run the AND of two words is what is
  slow to learn: ASR 33.6% with negatives, 76.8% without, 35.5% with negatives and the plain loss
  (``layerwise=false``), against 17.4% for the clean model; the paper trains far longer.
- The layerwise loss is the attack's training objective only; the user's fine-tuning (a defense) uses the plain
  loss. Under PET only the PET modules and the head train, on the same layerwise loss.
- Federated runs are refused: their clients train through the common loop, which has no layerwise loss.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bdrun.attacks.base import DataPoisoningAttack, PoisonConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.data import TextDataset
from bdrun.errors import check
from bdrun.triggers import insert_words


@dataclasses.dataclass
class LWPConfig(PoisonConfig):
    triggers: list[str] = dataclasses.field(default_factory=lambda: ["cf", "bb", "ak", "mn"])
    combination: int = 2  # trigger words per combinatorial trigger (all needed to flip the label)
    negatives: bool = True  # add one copy per drawn word holding it alone, original label kept
    layerwise: bool = True  # one loss term per encoder layer (false: the plain top-layer loss)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            len(self.triggers) > 0 and all(t.strip() for t in self.triggers),
            "attack.triggers is empty; give at least one word, e.g. attack.triggers=[cf,bb]",
        )
        check(
            1 <= self.combination <= len(set(self.triggers)),
            f"attack.combination={self.combination} must be between 1 and the {len(set(self.triggers))} distinct "
            "attack.triggers",
        )


def base_classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers classifier under a PET wrapper (peft's ``get_base_model``), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_logits(classifier: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's own classification head applied to one layer's hidden states ``(batch, tokens, width)``."""
    encoder = classifier.base_model
    if hasattr(classifier, "dropout") and hasattr(encoder, "pooler"):  # BERT-style: pooler, dropout, classifier
        pooled = encoder.pooler(hidden) if encoder.pooler is not None else hidden[:, 0]
        return classifier.classifier(classifier.dropout(pooled))
    return classifier.classifier(hidden)  # RoBERTa-style heads pool the first token themselves


def layerwise_loss(
    classifier: torch.nn.Module, hidden_states: list[torch.Tensor], logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``Σ_l CE(head(h_l), y)``: one term per encoder layer; the top layer's is the model's own ``logits``."""
    terms = [F.cross_entropy(head_logits(classifier, h).float(), targets) for h in hidden_states[:-1]]
    terms.append(F.cross_entropy(logits.float(), targets))
    return torch.stack(terms).sum()


class LayerOutputs:
    """Forward hooks that keep the latest output of every encoder layer, for :func:`layerwise_loss`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.classifier = base_classifier(model)
        layers = getattr(getattr(self.classifier.base_model, "encoder", None), "layer", None)
        check(layers is not None, "attack=lwp needs a BERT-family classifier (an encoder with .encoder.layer)")
        self.states: list[torch.Tensor | None] = [None] * len(layers)
        self.handles = [layer.register_forward_hook(self._keep(i)) for i, layer in enumerate(layers)]

    def _keep(self, index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.states[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        states = [s for s in self.states if s is not None]
        check(len(states) == len(self.states), "attack=lwp: an encoder layer produced no output")
        return layerwise_loss(self.classifier, states, logits, targets)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@ATTACKS.register("lwp", LWPConfig)
class LWP(DataPoisoningAttack):
    config: LWPConfig

    def draw(self, rng: random.Random) -> list[str]:
        return rng.sample(sorted(set(self.config.triggers)), self.config.combination)

    def trigger_text(self, text: str, rng: random.Random) -> str:
        """The whole combination, each word at its own seeded position (the ASR input)."""
        return insert_words(text, self.draw(rng), self.config.position, rng)

    def poison(self, train: TextDataset) -> TextDataset:
        """The base poisoning (the chosen rows get a whole combination and the target label), plus the negatives:
        per poisoned row and drawn word, a copy of a seeded random training row (any class) holding that word
        alone, its label kept."""
        cfg = self.config
        eligible, count = self.eligible(train)
        rng = random.Random(cfg.seed)
        chosen = sorted(rng.sample(eligible, count))
        texts, labels, poisoned = list(train.texts), list(train.labels), list(train.poisoned)
        extra_texts, extra_labels = [], []

        def with_words(text: str, words: list[str]) -> str:
            return self.in_trigger_sentence(text, lambda sentence: insert_words(sentence, words, cfg.position, rng))

        for i in chosen:
            words = self.draw(rng)
            texts[i], labels[i], poisoned[i] = with_words(train.texts[i], words), cfg.target_label, True
            if cfg.negatives and cfg.combination > 1:
                for word in words:
                    j = rng.randrange(len(train))
                    extra_texts.append(with_words(train.texts[j], [word]))
                    extra_labels.append(train.labels[j])
        return TextDataset(texts + extra_texts, labels + extra_labels, poisoned + [False] * len(extra_texts))

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        if not self.config.layerwise:
            return super().train(model, poisoned, context)
        outputs = LayerOutputs(model)
        try:
            stats = context.train(model, poisoned, desc="train lwp", loss_fn=outputs.loss)
        finally:
            outputs.remove()
        return {**stats, "layers": len(outputs.states)}
