"""Client embeddings: how a client's updated model behaves on a fixed server-side probe set.

The client-embedding paper (Zhang et al., Findings of EMNLP 2024) asks for embeddings whose distances reflect
the divergence of the clients' data distributions; how they are built could not be read here. Our reading: the
server holds a small clean probe set (a seeded sample of the dev split) and embeds each client by its updated
model's outputs on it, concatenated over the probe inputs:

* ``probs`` (default): the softmax distribution per probe input. A client trained on a shifted label
  distribution (or toward a backdoor target) moves these probabilities toward its labels, while the millions of
  parameters that honest non-IID noise moves do not count, only their effect on predictions.
* ``hidden``: the last layer's mean-pooled hidden state per probe input (richer, larger: P x hidden size).
"""

from __future__ import annotations

import torch

from bdrun.context import StageContext
from bdrun.data import TextDataset


def _probs(output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return output.logits.float().softmax(dim=-1)


def _hidden(output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = batch["attention_mask"].unsqueeze(-1).float()
    last = output.hidden_states[-1].float()
    return (last * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def client_embedding(model: torch.nn.Module, probe: TextDataset, context: StageContext, features: str) -> torch.Tensor:
    """The flat embedding ``(len(probe) * k,)`` of ``model`` on the probe texts (k classes or hidden units)."""
    if features == "hidden":
        rows = context.forward(model, probe.texts, _hidden, desc="client embedding", output_hidden_states=True)
    else:
        rows = context.forward(model, probe.texts, _probs, desc="client embedding")
    return rows.reshape(-1)
