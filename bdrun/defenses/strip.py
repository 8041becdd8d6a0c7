"""``defense=strip``: STRIP, the entropy of predictions over perturbed copies of an input (Gao et al.).

A trigger dominates the prediction: however much of a triggered input is replaced, the backdoored model keeps
predicting the target with confidence, so the predictions over perturbed copies have low entropy; a clean
input's prediction wanders as its words are replaced. Score = −(mean entropy over the copies), so that higher
means more suspicious like every detector here.

Following the text version the RAP authors ran as a baseline (official code lancopku/RAP ``strip_vita.py``):

- replacement words come from the held-out clean samples of the *other* label(s): the fitting part of the dev
  split, less the samples of ``protect_label`` (every fitting sample when ``protect_label`` is null; with more
  than two classes, every label but the protected one), punctuation removed;
- each such sample gets a TF-IDF ranking of the vocabulary; each perturbed copy of an input draws one held-out
  sample at random and replaces ``max(1, int(replace_ratio × words))`` randomly chosen word positions, the i-th
  chosen position with that sample's i-th highest TF-IDF word;
- 20 copies, replace_ratio 0.7.

Our readings where the official code cannot be followed literally: its TF and document counts iterate over a
text's *characters* and test substrings (``for w in text`` on a string), which makes almost every TF-IDF zero;
we compute the evident intent, word-level TF (count / words in the sample) and IDF ``log(N / df) + 1``.
When a copy needs more words than the drawn sample has (words absent from it all score zero and the official
``argsort`` orders them arbitrarily), we cycle through the sample's own ranking again. In a sentence pair the
separator word is never replaced. The perturbations of each input are seeded by (seed, input), so a score does
not depend on which other inputs are scored with it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bdrun.context import StageContext
from bdrun.data import TextDataset
from bdrun.data.pairs import PAIR_MARK
from bdrun.defenses.base import Detector, DetectorConfig
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

PUNCTUATION = frozenset(".,!?:;\"'()/~-`") | {"...", "--", "``", "''", "'s", "n't"}


@dataclasses.dataclass
class StripConfig(DetectorConfig):
    copies: int = 20  # perturbed copies per input
    replace_ratio: float = 0.7  # fraction of an input's words replaced in each copy (at least one)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.copies >= 1, f"defense.copies={self.copies} must be at least 1, e.g. 20")
        check(0.0 < self.replace_ratio <= 1.0, f"defense.replace_ratio={self.replace_ratio} must be in (0, 1]")


def perturb(text: str, ranked_words: Sequence[str], replace_ratio: float, rng: random.Random) -> str:
    """One copy of ``text``: a fraction of its word positions, drawn at random, replaced in order by the words of
    ``ranked_words`` (the i-th position gets the i-th word, cycling if there are fewer words than positions)."""
    tokens = text.split()
    positions = [i for i, token in enumerate(tokens) if token != PAIR_MARK]
    if not positions:
        return text
    chosen = rng.sample(positions, max(1, int(len(positions) * replace_ratio)))
    for rank, position in enumerate(chosen):
        tokens[position] = ranked_words[rank % len(ranked_words)]
    return " ".join(tokens)


def tfidf_rankings(texts: Sequence[str], keep: int) -> tuple[list[str], list[list[int]]]:
    """The vocabulary (first-seen order) of ``texts`` and, per text, the indices of its ``keep`` highest TF-IDF
    words (word-level TF = count / length, IDF = log(N / df) + 1); only words the text contains are ranked."""
    documents = [[w for w in text.split() if w not in PUNCTUATION and w != PAIR_MARK] for text in texts]
    vocab: dict[str, int] = {}
    for words in documents:
        for word in words:
            vocab.setdefault(word, len(vocab))
    frequency = np.zeros(len(vocab))
    for words in documents:
        for word in set(words):
            frequency[vocab[word]] += 1
    idf = np.log(len(documents) / np.maximum(frequency, 1)) + 1
    rankings = []
    for words in documents:
        counts: dict[int, int] = {}
        for word in words:
            counts[vocab[word]] = counts.get(vocab[word], 0) + 1
        scored = sorted(counts, key=lambda i: (-counts[i] / len(words) * idf[i], i))
        rankings.append(scored[:keep])
    return list(vocab), rankings


def entropy(output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Entropy of each row's predicted class distribution (nats)."""
    log_probs = torch.log_softmax(output.logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


@DEFENSES.register("strip", StripConfig)
class Strip(Detector):
    config: StripConfig
    revision = 2  # 2: TF-IDF words of held-out other-label samples (official), not uniform dev words

    KEEP = 256  # ranked words kept per held-out sample: more than any copy replaces at max_length 128

    def __init__(self, config: StripConfig) -> None:
        super().__init__(config)
        self.vocab: list[str] = []
        self.rankings: list[list[int]] = []

    def fit_scorer(
        self, model: torch.nn.Module, fitting: TextDataset, calibration: TextDataset, context: StageContext
    ) -> dict[str, Any]:
        protect = self.config.protect_label
        others = [t for t, y in zip(fitting.texts, fitting.labels, strict=True) if protect is None or y != protect]
        check(bool(others), f"defense=strip: no dev sample outside defense.protect_label={protect} to perturb with")
        self.vocab, rankings = tfidf_rankings(others, self.KEEP)
        self.rankings = [r for r in rankings if r]
        check(bool(self.rankings), "defense=strip found no words in the held-out dev texts to perturb with")
        return {"replacement_words": len(self.vocab), "replacement_samples": len(self.rankings)}

    def score(self, model: torch.nn.Module, texts: Sequence[str], context: StageContext) -> np.ndarray:
        copies = []
        for text in texts:
            rng = random.Random(f"{context.seed}:{text}")
            for _ in range(self.config.copies):
                ranked = [self.vocab[i] for i in rng.choice(self.rankings)]
                copies.append(perturb(text, ranked, self.config.replace_ratio, rng))
        entropies = context.forward(model, copies, entropy, desc="strip copies").numpy()
        return -entropies.reshape(len(texts), self.config.copies).mean(axis=1)

    def state(self) -> dict[str, torch.Tensor]:
        # Tensors only, so it fits the safetensors file: the vocabulary as newline-separated UTF-8 bytes, the
        # rankings as one padded index matrix (-1 = no word).
        width = max(len(r) for r in self.rankings)
        rankings = torch.full((len(self.rankings), width), -1, dtype=torch.int64)
        for row, ranking in enumerate(self.rankings):
            rankings[row, : len(ranking)] = torch.tensor(ranking, dtype=torch.int64)
        return {
            "words": torch.frombuffer(bytearray("\n".join(self.vocab).encode()), dtype=torch.uint8),
            "rankings": rankings,
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.vocab = bytes(state["words"].numpy()).decode().split("\n")
        self.rankings = [[i for i in row if i >= 0] for row in state["rankings"].tolist()]
