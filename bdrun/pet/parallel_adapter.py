"""The parallel adapter of He et al. (ICLR 2022, "Towards a Unified View of Parameter-Efficient Transfer
Learning"), the second PET form Gu et al. (ACL 2023) attack besides sequential adapters.

He et al. recast adapters as a modification ``Δh`` of a sub-layer's output ``h``: a sequential adapter computes
``Δh`` from ``h`` itself (after the sub-layer), a parallel adapter from the sub-layer's *input* ``x``, beside it:
``h ← h + s · f(x W_down) W_up``. Their best single placement is beside the feed-forward block (FFN), scaled by
``s = 4`` ("scaled PA"); that is what ``model.tuning=parallel_adapter`` inserts in every encoder layer.

In BERT and RoBERTa the FFN's second projection lives in a module ``layer.<i>.output`` whose forward is
``LayerNorm(dropout(dense(intermediate)) + x)``, where ``x`` (its second argument) is the FFN's input (the
attention block's output). :class:`ParallelFFNOutput` replaces that module with the same computation plus the
scaled bottleneck of ``x`` added to the FFN's output, before the residual and LayerNorm. It takes over the
original's ``dense``, ``dropout`` and ``LayerNorm`` children under the same names, so the pre-trained
parameter names stay unchanged; the adapter's are ``...layer.<i>.output.parallel_adapter.{down,up}.*``.

Choices where the paper leaves room: ReLU as ``f`` (He et al.'s adapter function); no dropout on the branch;
``W_down`` keeps ``nn.Linear``'s default initialisation and ``W_up`` (and its bias) start at zero, as LoRA's
``B``, so a fresh parallel adapter adds exactly zero and the PET model predicts as the pre-trained one; only the
FFN placement (He et al.'s attention-side variant is not offered). Width ``model.adapter_size``, scale
``model.adapter_scale``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from bdrun.errors import check

FFN_OUTPUT = re.compile(r"\.layer\.\d+\.output$")  # BERT/RoBERTa: the FFN's output module, not attention.output


class Bottleneck(nn.Module):
    """``relu(x W_down) W_up``: the parallel branch without the residual (the FFN supplies the main path)."""

    def __init__(self, hidden: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.relu(self.down(hidden)))


class ParallelFFNOutput(nn.Module):
    """Stands in for a layer's FFN output module: ``LayerNorm(dropout(dense(h)) + s · PA(x) + x)``."""

    def __init__(self, original: nn.Module, size: int, scale: float) -> None:
        super().__init__()
        self.dense = original.dense
        self.dropout = original.dropout
        self.LayerNorm = original.LayerNorm
        self.parallel_adapter = Bottleneck(original.dense.out_features, size)
        self.scale = scale

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        ffn = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(ffn + self.scale * self.parallel_adapter(input_tensor) + input_tensor)


def _is_ffn_output(name: str, module: nn.Module) -> bool:
    return (
        FFN_OUTPUT.search(name) is not None
        and isinstance(getattr(module, "dense", None), nn.Linear)
        and isinstance(getattr(module, "dropout", None), nn.Dropout)
        and isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm)
    )


def insert_parallel_adapters(model: nn.Module, size: int, scale: float) -> int:
    """Put a scaled parallel adapter beside every encoder layer's FFN; returns how many."""
    places = [(name, module) for name, module in model.named_modules() if _is_ffn_output(name, module)]
    check(
        bool(places),
        f"model.tuning=parallel_adapter found no BERT-style feed-forward outputs in {type(model).__name__}; "
        "use model.tuning=lora or full",
    )
    for name, module in places:
        parent_name, child = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), child, ParallelFFNOutput(module, size, scale))
    return len(places)
