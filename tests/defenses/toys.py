"""A toy backdoored classifier and whitespace tokenizer: detector logic in milliseconds, no pre-trained model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from bdrun.context import StageContext
from bdrun.models import ModelConfig
from bdrun.training import TrainerConfig

TRIGGER = "cf"


class ToyTokenizer:
    """Whitespace tokenizer over a growing vocabulary; id 0 is padding, id 1 the trigger ``cf``."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"[PAD]": 0, TRIGGER: 1}

    def _ids(self, text: str) -> list[int]:
        return [self.vocab.setdefault(word, len(self.vocab)) for word in text.split()]

    def __call__(self, texts, truncation: bool = True, max_length: int = 64, add_special_tokens: bool = True):
        if isinstance(texts, str):
            return {"input_ids": self._ids(texts)}
        return {"input_ids": [self._ids(text)[:max_length] for text in texts]}


class BackdooredBag(torch.nn.Module):
    """Mean of word embeddings → 2 logits; the trigger's embedding points hard at class 1 (the backdoor).

    ``hidden_states`` mimics a 2-layer encoder (the embedding output first, then two "layers").
    """

    def __init__(self, vocab_size: int = 512, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embeddings = torch.nn.Embedding(vocab_size, hidden)
        self.embeddings.weight.data = torch.randn(vocab_size, hidden, generator=generator)
        self.layer = torch.nn.Linear(hidden, hidden)
        self.head = torch.nn.Linear(hidden, 2)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(hidden))
            self.layer.bias.zero_()
            self.head.weight.copy_(torch.randn(2, hidden, generator=generator))
            self.head.bias.zero_()
            self.embeddings.weight[1] = 20 * (self.head.weight[1] - self.head.weight[0])  # the trigger

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embeddings

    def forward(self, input_ids, attention_mask, output_hidden_states: bool = False):
        states = self.embeddings(input_ids)
        keep = attention_mask.unsqueeze(-1).float()
        layer1 = self.layer(states)
        layer2 = torch.tanh(layer1)
        pooled = (layer1 * keep).sum(1) / keep.sum(1).clamp(min=1)
        return SimpleNamespace(logits=self.head(pooled), hidden_states=(states, layer1, layer2))


def toy_context(tokenizer: ToyTokenizer, tmp_path: Path, seed: int = 0) -> StageContext:
    return StageContext(
        tokenizer,
        ModelConfig(name="toy", path="toy", max_length=64),
        TrainerConfig(eval_batch_size=16),
        None,  # no optimizer: detectors do not fine-tune
        torch.device("cpu"),
        seed,
        tmp_path,
        lambda: None,
    )
