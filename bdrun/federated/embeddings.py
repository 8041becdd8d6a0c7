"""Client embeddings: how a client's updated model behaves on a fixed server-side probe set.

The client-embedding paper (Zhang, Zhou, Meng, Zhou and Sun, "Enhancing Byzantine-Resistant Aggregations with
Client Embedding", Findings of EMNLP 2024, pp. 5889-5896, a short paper) asks for embeddings whose distances
reflect the divergence of the clients' data distributions, to replace parameter distances inside existing
Byzantine-resistant aggregators. Only its abstract and landing pages could be read (searched again for issue 23;
no full text or code found), so how the embeddings are built is not known. The same first author's Fed-FA
(NeurIPS 2023) estimates client data divergence from aggregation updates and Hessians, with a synthesized
dataset because the server has no client data; a server-side probe set plays that role here. Our reading,
each remaining choice a knob: the server holds a small clean probe set (``probe_size`` seeded dev samples,
our choice of source and size) and embeds each client by its updated model's outputs on it, concatenated over
the probe inputs (``features``):

* ``probs`` (default): the softmax distribution per probe input. A client trained on a shifted label
  distribution (or toward a backdoor target) moves these probabilities toward its labels, while the millions of
  parameters that honest non-IID noise moves do not count, only their effect on predictions.
* ``hidden``: the last layer's mean-pooled hidden state per probe input (richer, larger: P x hidden size).

The distance between embeddings is squared Euclidean (``selector`` krum / multi_krum) or the Dim-Krum distance
over embedding dimensions (``selector: dim_krum``, ``rho`` a fraction of them); the selected clients'
parameter updates are averaged. Default selector multi_krum (our choice).
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
