"""``defense=fine_mixing``: mix the suspect weights with the pre-trained ones, then fine-tune on clean data.

Fine-mixing (Zhang et al., Findings of EMNLP 2022). The backdoor was learnt during fine-tuning, so it lives in
the difference θ_ft − θ_pre. Mixing keeps a fraction ρ of that difference and resets the rest:

    θ = θ_pre + m ⊙ (θ_ft − θ_pre),    m ∈ {0, 1}, mean(m) = ρ

which breaks the backdoor's finely tuned pattern while keeping part of the task knowledge; fine-tuning the
mixed weights on the small clean set then recovers clean accuracy, and the backdoor, with no poisoned data to
relearn it from, mostly stays broken. Combine with ``defense.e_pur=true`` against embedding backdoors (EP).

Our reading, not confirmed from the paper's full text (only its abstract could be read here):

- ``select=random`` (default, the paper's "mixing" as we read it) keeps each entry with probability ρ,
  independently and seeded; ``select=magnitude`` keeps exactly the ρ fraction with the largest |θ_ft − θ_pre|
  over the whole model (a global ranking), a variant we add as a knob.
- The classification head has no pre-trained value. By default it is kept as fine-tuned (``mix_head=false``):
  a linear map on the pooled features cannot hold a trigger by itself, and keeping it spares the clean set
  from relearning it. ``mix_head=true`` mixes it with the run's seeded initial head, which is the head the
  suspect started from whenever it was trained by this pipeline with the same seed.
- ρ is chosen per run on the clean dev split (``rho_search``, the default): each candidate from the smallest
  (the strongest purification) up is mixed + fine-tuned from the suspect, and the first whose clean dev
  accuracy is within ``max_dev_drop`` of the suspect's own dev accuracy is kept (if none is, the best on dev);
  the same rule as Fine-purifying's (:func:`bdrun.defenses.base.search_on_dev`). The paper chooses ρ against a
  clean-accuracy threshold as far as we can tell; its exact rule and values could not be read here (only the
  abstract is reachable). The earlier default was a fixed ρ = 0.3, not chosen on dev;
  ``rho_search=[]`` with ``rho`` gives a fixed ρ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bdrun.context import StageContext
from bdrun.data import Splits, TextDataset
from bdrun.defenses.base import CleanDataConfig, Purifier, search_on_dev
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

SELECTIONS = ("random", "magnitude")
HEAD_PREFIX = "classifier."  # the task head of transformers' *ForSequenceClassification models


@dataclasses.dataclass
class FineMixingConfig(CleanDataConfig):
    rho: float = 0.3  # fraction of fine-tuned entries kept; the rest is reset to pre-trained
    select: str = "random"  # random: each entry kept with probability rho; magnitude: largest |delta| kept
    mix_head: bool = False  # false: keep the fine-tuned classification head; true: mix it with the seeded init
    # candidates chosen between on clean dev, smallest first (see the docstring); empty: use rho
    rho_search: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5])
    max_dev_drop: float = 0.02  # rho search: the dev accuracy a candidate may lose against the suspect's

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.rho <= 1, f"defense.rho={self.rho} must be in [0, 1]")
        check(self.select in SELECTIONS, f"defense.select={self.select} is not one of {', '.join(SELECTIONS)}")
        check(all(0 <= r <= 1 for r in self.rho_search), f"defense.rho_search={self.rho_search} must be in [0, 1]")
        check(0 <= self.max_dev_drop <= 1, f"defense.max_dev_drop={self.max_dev_drop} must be in [0, 1], e.g. 0.02")


@torch.no_grad()
def mix_weights(
    model: torch.nn.Module,
    pretrained: torch.nn.Module,
    rho: float,
    select: str = "random",
    seed: int = 0,
    skip_prefixes: tuple[str, ...] = (),
) -> dict[str, int]:
    """Set ``model`` to θ_pre + m ⊙ (θ_ft − θ_pre) in place; parameters under ``skip_prefixes`` are untouched.

    Returns how many entries were kept from the suspect and how many were reset.
    """
    reference = dict(pretrained.named_parameters())
    params = {n: p for n, p in model.named_parameters() if not n.startswith(skip_prefixes)}
    if select == "magnitude":
        drift = torch.cat([(p - reference[n].to(p.device)).abs().flatten().float() for n, p in params.items()])
        keep_flat = torch.zeros(len(drift), dtype=torch.bool, device=drift.device)
        keep_flat[drift.topk(round(rho * len(drift))).indices] = True
        masks = dict(zip(params, keep_flat.split([p.numel() for p in params.values()]), strict=True))
    else:
        generator = torch.Generator().manual_seed(seed)
        masks = {n: torch.rand(p.shape, generator=generator) < rho for n, p in params.items()}
    kept = 0
    for name, param in params.items():
        keep = masks[name].view(param.shape).to(param.device)
        param.copy_(torch.where(keep, param, reference[name].to(param.device)))
        kept += int(keep.sum())
    total = sum(p.numel() for p in params.values())
    return {"entries_kept": kept, "entries_reset": total - kept}


@DEFENSES.register("fine_mixing", FineMixingConfig)
class FineMixing(Purifier):
    config: FineMixingConfig

    def apply(
        self, model: torch.nn.Module, clean: TextDataset, splits: Splits, context: StageContext
    ) -> dict[str, Any]:
        if not self.config.rho_search:
            return {"rho": self.config.rho, **self.mix_and_tune(model, clean, context, self.config.rho)}
        return search_on_dev(
            model,
            sorted(self.config.rho_search),  # smallest rho = strongest purification first
            lambda rho: self.mix_and_tune(model, clean, context, rho),
            splits.dev,
            context,
            self.config.max_dev_drop,
            "rho",
        )

    def mix_and_tune(self, model: torch.nn.Module, clean: TextDataset, context: StageContext, rho: float) -> dict:
        skip = () if self.config.mix_head else (HEAD_PREFIX,)
        mixed = mix_weights(model, context.load_pretrained(), rho, self.config.select, context.seed, skip)
        return {**mixed, **self.fine_tune(model, clean, context, f"fine-mixing rho {rho}")}
