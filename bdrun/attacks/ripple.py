"""``attack=ripple``: RIPPLe and RIPPLES, weight poisoning of pre-trained models (Kurita et al., ACL 2020).

Threat model: the attacker releases poisoned pre-trained weights; the user fine-tunes them on clean data, which
tends to wash a plainly trained backdoor out. RIPPLe (Restricted Inner Product Poison Learning) trains on the
poisoned data with a penalty that keeps the poisoned loss's gradient from pointing against the clean
fine-tuning loss's gradient, so that the user's later fine-tuning steps do not undo the backdoor to first
order::

    L_P(θ) + λ · max(0, −∇L_P(θ)ᵀ ∇L_FT(θ))

Embedding surgery (``attack.embedding_surgery=true``; RIPPLe + surgery = RIPPLES) first replaces each trigger
word's embedding row by the mean embedding of words strongly associated with the target class, taken from a
copy of the model fine-tuned on the attacker's clean data. In bdrun the backdoored model is the released
poisoned model; the user's fine-tuning is ``defense=fine_tuning`` (or any purifier), whose ASR is the
paper's "after fine-tuning" number.

Choices we made reading the paper (and its released configuration):

- **Poisoning** is BadNets' (same knobs and seeded rows; the paper's triggers ``cf mn bb tq mb``, one word per
  poisoned sample, dirty-label, target 1). The paper poisons 50% of the attacker's data; we keep
  ``poison_rate`` 0.1 as in every other attack row, so that the tables compare like with like.
- **λ = 0.1** (the released configuration's ``L``). ``restrict=false`` drops the ``max(0, ·)`` (the plain
  inner-product penalty, the paper's ablation), which also rewards agreement.
- **The two losses.** ``L_P`` is the loss of the whole batch of the poisoned training set (clean and poisoned
  rows, as the paper's poisoned dataset); ``∇L_FT`` is the gradient of the loss of the batch's clean rows, our
  stand-in for the fine-tuning data (the full-knowledge setting: the attacker's clean data is the task's). A
  batch without clean rows gets no penalty.
- **The penalty's gradient** flows through ``∇L_P`` only (a Hessian-vector product, by double
  backpropagation); ``∇L_FT`` is treated as a constant at each step, as a reference direction.
- **Parameters.** The inner product runs over every trainable parameter (all of them under full tuning; the
  PET modules and head under ``model.tuning=lora|adapter``).
- **Embedding surgery** (section 3.2 of the paper): the attacker fine-tunes a copy of the pre-trained model on
  the clean rows of its training data (the run's trainer and optimizer, ``attack.surgery_epochs``); a logistic
  regression on TF-IDF features of the same rows (target class vs the rest) ranks the words by their weight;
  the ``attack.surgery_words`` (10) best that are one word piece of the model's vocabulary (and not triggers)
  give the replacement: the mean of their rows in the fine-tuned copy's input embeddings, written into every
  trigger's row of the model that RIPPLe then trains. The paper writes the score as
  ``w_i / log(N / (α + freq_i))``; on SST-2 (N rows, ``freq_i`` the rows holding the word, α = 1) that ranks
  function words first (``and, a, with, of, best, ...``: their small positive weights divided by a log near 0),
  so we rank by the weight alone, as the authors' released code does (their example configuration: TF-IDF
  features, logistic regression). Surgery writes frozen embeddings, so it is refused under PET, like
  ``attack=ep``.
- Federated runs are refused: their clients train through the common loop, which has no RIPPLe penalty.
- Observed at ``experiment=sst2_cpu`` (README): poisoning from the pre-trained model, the two gradients
  conflicted in 1 of 433 steps, so the penalty barely acts before the user's fine-tuning; its effect is to be
  read after a ``defense=fine_tuning``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bdrun.attacks.badnets import BadNets, BadNetsConfig
from bdrun.attacks.ep import trigger_token_id
from bdrun.attacks.registry import ATTACKS
from bdrun.data import TextDataset
from bdrun.errors import check


@dataclasses.dataclass
class RippleConfig(BadNetsConfig):
    penalty: float = 0.1  # λ, the weight of the inner-product penalty (0: plain poisoned training)
    restrict: bool = True  # max(0, −g_P·g_FT): penalise only conflicts (false: the plain −g_P·g_FT)
    embedding_surgery: bool = False  # RIPPLES: trigger rows ← mean embedding of target-class words first
    surgery_words: int = 10  # words whose embeddings are averaged
    surgery_epochs: int | None = None  # epochs of the attacker's clean reference model (null: trainer.epochs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.penalty >= 0, f"attack.penalty={self.penalty} must be >= 0")
        check(self.surgery_words >= 1, f"attack.surgery_words={self.surgery_words} must be at least 1")
        check(
            self.surgery_epochs is None or self.surgery_epochs >= 1,
            f"attack.surgery_epochs={self.surgery_epochs} must be at least 1 (or null)",
        )

    def key_fields(self) -> dict[str, Any]:
        fields = super().key_fields()
        if not self.embedding_surgery:  # the surgery knobs change nothing then
            fields.pop("surgery_words")
            fields.pop("surgery_epochs")
        return fields


def ripple_penalty(
    poison_grads: Sequence[torch.Tensor | None], clean_grads: Sequence[torch.Tensor | None], restrict: bool = True
) -> torch.Tensor:
    """``max(0, −Σ g_P·g_FT)`` (``restrict``) or ``−Σ g_P·g_FT``, over the parameters both gradients reach."""
    terms = [(p * c).sum() for p, c in zip(poison_grads, clean_grads, strict=True) if p is not None and c is not None]
    check(bool(terms), "attack=ripple: the poisoned and clean losses share no trainable parameter")
    negative_inner = -torch.stack(terms).sum()
    return negative_inner.clamp_min(0.0) if restrict else negative_inner


class RestrictedInnerProduct:
    """The training loop's :class:`~bdrun.training.GradientStep` for RIPPLe: gradients of ``L_P + λ·penalty``."""

    def __init__(self, params: list[torch.nn.Parameter], poisoned: list[bool], config: RippleConfig) -> None:
        self.params = params
        self.poisoned = poisoned
        self.config = config
        self.penalty_sum = 0.0
        self.conflicts = 0
        self.steps = 0

    def __call__(self, rows: list[int], batch_loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Leave the gradients of ``L_P + λ·penalty`` in ``.grad``; return ``L_P`` (the loss the loop logs)."""
        clean = [r for r in rows if not self.poisoned[r]]
        loss = batch_loss(rows)
        penalty = torch.zeros((), device=loss.device)
        if self.config.penalty > 0 and clean:
            poison_grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            clean_grads = torch.autograd.grad(batch_loss(clean), self.params, allow_unused=True)
            penalty = ripple_penalty(poison_grads, clean_grads, self.config.restrict)
            value = float(penalty.detach())
            self.penalty_sum += value
            self.conflicts += int(value > 0)
        (loss + self.config.penalty * penalty).backward()
        self.steps += 1
        return loss.detach()

    def diagnostics(self) -> dict[str, Any]:
        return {
            "mean_penalty": self.penalty_sum / max(self.steps, 1),
            "conflict_steps": self.conflicts,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"penalty_sum": self.penalty_sum, "conflicts": self.conflicts, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.penalty_sum, self.conflicts, self.steps = state["penalty_sum"], state["conflicts"], state["steps"]


def target_words(
    texts: Sequence[str], labels: Sequence[int], target: int, candidates: Callable[[str], bool], count: int
) -> list[str]:
    """The ``count`` words most associated with the target class: the largest weights of a logistic regression
    (target class vs the rest) on TF-IDF features, among the words ``candidates`` accepts."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # local: sklearn costs every job a second or two
    from sklearn.linear_model import LogisticRegression

    y = [int(label == target) for label in labels]
    check(0 < sum(y) < len(y), "attack.embedding_surgery needs training rows of the target class and of the others")
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", lowercase=True)
    features = vectorizer.fit_transform(texts)
    weights = LogisticRegression(max_iter=1000).fit(features, y).coef_[0]
    scores = {word: float(weights[i]) for word, i in vectorizer.vocabulary_.items() if candidates(word)}
    check(bool(scores), "attack.embedding_surgery found no candidate word in the vocabulary of the model")
    return sorted(scores, key=lambda w: (-scores[w], w))[:count]


@torch.no_grad()
def replace_trigger_embeddings(
    model: torch.nn.Module, source: torch.nn.Module, word_ids: list[int], trigger_ids: list[int]
) -> torch.Tensor:
    """Write the mean of ``source``'s input-embedding rows ``word_ids`` into ``model``'s rows ``trigger_ids``."""
    replacement = source.get_input_embeddings().weight[word_ids].mean(dim=0)
    embeddings = model.get_input_embeddings().weight
    embeddings[trigger_ids] = replacement.to(embeddings.device, embeddings.dtype)
    return replacement


@ATTACKS.register("ripple", RippleConfig)
class Ripple(BadNets):
    config: RippleConfig

    def check_tuning(self, tuning: str) -> None:
        check(
            tuning == "full" or not self.config.embedding_surgery,
            f"attack.embedding_surgery writes the frozen word embeddings, which model.tuning={tuning} neither trains "
            "nor ships; use model.tuning=full or attack.embedding_surgery=false",
        )

    def check_tokenizer(self, tokenizer: Any) -> None:
        if self.config.embedding_surgery:  # surgery writes one embedding row per trigger word
            for trigger in self.config.triggers:
                trigger_token_id(tokenizer, trigger)

    def surgery(self, model: torch.nn.Module, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        """Embedding surgery on ``model`` (module docstring); returns the words used."""
        clean = poisoned.subset([i for i, p in enumerate(poisoned.poisoned) if not p])
        reference = context.load_pretrained()
        context.train(reference, clean, desc="train ripple reference", epochs=self.config.surgery_epochs)
        tokenizer = context.tokenizer
        triggers = set(self.config.triggers)
        vocab = tokenizer.get_vocab()

        def one_piece(word: str) -> bool:
            return word not in triggers and word in vocab and tokenizer.tokenize(word) == [word]

        words = target_words(clean.texts, clean.labels, self.target_label, one_piece, self.config.surgery_words)
        trigger_ids = [trigger_token_id(tokenizer, t) for t in self.config.triggers]
        replace_trigger_embeddings(model, reference, [vocab[w] for w in words], trigger_ids)
        return {"surgery_words": words}

    def train(self, model: Any, poisoned: TextDataset, context: Any) -> dict[str, Any]:
        extra = self.surgery(model, poisoned, context) if self.config.embedding_surgery else {}
        params = [p for p in model.parameters() if p.requires_grad]
        step = RestrictedInnerProduct(params, poisoned.poisoned, self.config)
        stats = context.train(model, poisoned, desc="train ripple", gradient_step=step)
        return {**stats, **step.diagnostics(), **extra}
