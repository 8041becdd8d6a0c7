"""Sequential (Houlsby) bottleneck adapters, written here because the ``adapters`` package pins an older
transformers major version than the one bdrun runs.

Houlsby et al. (ICML 2019) put a bottleneck ``h + up(act(down(h)))`` after the attention block's output
projection and after the feed-forward block's output projection of every layer, before the residual
connection and LayerNorm. In BERT and RoBERTa both places are modules with ``dense``, ``dropout`` and
``LayerNorm`` children whose forward is ``LayerNorm(dropout(dense(x)) + input)``; we replace their ``dropout``
child by :class:`DropoutThenAdapter`, so the adapter sees exactly the sub-layer's output and the pre-trained
parameter names stay unchanged (the adapter's parameters are ``...output.dropout.adapter.{down,up}.*``).

Choices where the papers leave room: GELU as the non-linearity (the encoder's own); the up-projection starts
at zero and the down-projection from N(0, 0.01²), so a freshly inserted adapter is the identity and the PET
model's predictions equal the pre-trained model's until training moves it.
"""

from __future__ import annotations

import torch
from torch import nn

from bdrun.errors import check


class Adapter(nn.Module):
    """``h + up(gelu(down(h)))`` with a ``size``-dimensional bottleneck."""

    def __init__(self, hidden: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(hidden)))


class DropoutThenAdapter(nn.Module):
    """Stands in for a sub-layer output's ``dropout``: the original dropout, then the adapter."""

    def __init__(self, dropout: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter = adapter

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.dropout(hidden))


def _is_sublayer_output(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, "dense", None), nn.Linear)
        and isinstance(getattr(module, "dropout", None), nn.Dropout)
        and isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm)
    )


def insert_adapters(model: nn.Module, size: int) -> int:
    """Insert an adapter after every attention-output and feed-forward-output projection; returns how many."""
    places = [module for name, module in model.named_modules() if ".layer." in name and _is_sublayer_output(module)]
    check(
        bool(places),
        f"model.tuning=adapter found no BERT-style sub-layer outputs in {type(model).__name__}; "
        "use model.tuning=lora or full",
    )
    for module in places:
        module.dropout = DropoutThenAdapter(module.dropout, Adapter(module.dense.out_features, size))
    return len(places)
