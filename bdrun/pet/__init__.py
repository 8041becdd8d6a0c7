"""Parameter-efficient tuning (PET): ``model.tuning=full|lora|adapter|parallel_adapter``.

:func:`apply_tuning` is called where the pre-trained model is built (:func:`bdrun.models.load_pretrained`), so
every stage that trains (clean, poison, purify) starts from the same PET model and trains only what it marks
trainable: the PET parameters and the classification head. Everything else is frozen (``requires_grad``
off), and since the shared optimizer only receives trainable parameters, frozen weights stay bit-identical.

- ``lora``: the ``peft`` library's LoRA layers, injected in place (``peft.inject_adapter_in_model``) so that
  the model keeps its class and attribute paths (``model.bert``, ``model.classifier``) that attacks and
  defenses use. The wrapped linear layers' own weights move to ``...query.base_layer.weight``.
- ``adapter``: sequential Houlsby bottleneck adapters (:mod:`bdrun.pet.adapter`).
- ``parallel_adapter``: He et al.'s scaled parallel adapter beside each feed-forward block
  (:mod:`bdrun.pet.parallel_adapter`).

The PET modules are initialised from a seed derived from the run's seed, so the PET pre-trained model is the
same in every process; that is what lets a PET stage cache only its trained tensors (see
:func:`bdrun.models.save_weights`).
"""

from __future__ import annotations

from typing import Any

import torch

from bdrun.errors import BdrunError, check
from bdrun.model_config import ModelConfig
from bdrun.pet.adapter import insert_adapters
from bdrun.pet.parallel_adapter import insert_parallel_adapters

LORA_KNOBS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
ADAPTER_KNOBS = ("adapter_size",)
PARALLEL_KNOBS = ("adapter_scale",)  # besides adapter_size, which both adapter forms read
PET_MARKERS = {"lora": ("lora_",), "adapter": (".adapter.",), "parallel_adapter": (".parallel_adapter.",)}
HEAD_PREFIX = "classifier."


def key_fields(cfg: ModelConfig, fields: dict[str, Any]) -> dict[str, Any]:
    """The model config's cache-key fields: only the knobs of the chosen tuning (full-tuning keys stay as they
    were before PET existed, and adding a tuning's knob leaves the other tunings' keys alone, so existing caches
    remain valid)."""
    fields = dict(fields)
    drop = {
        "full": (*LORA_KNOBS, *ADAPTER_KNOBS, *PARALLEL_KNOBS, "tuning"),
        "lora": (*ADAPTER_KNOBS, *PARALLEL_KNOBS),
        "adapter": (*LORA_KNOBS, *PARALLEL_KNOBS),
        "parallel_adapter": LORA_KNOBS,
    }
    for knob in drop[cfg.tuning]:
        fields.pop(knob, None)
    return fields


def is_pet_parameter(name: str, tuning: str) -> bool:
    return any(marker in name for marker in PET_MARKERS.get(tuning, ()))


def apply_tuning(model: torch.nn.Module, cfg: ModelConfig, seed: int) -> torch.nn.Module:
    """Insert the PET modules of ``cfg.tuning`` and freeze everything but them and the head (in place)."""
    if cfg.tuning == "full":
        return model
    torch.manual_seed(seed + 1)  # PET initialisation: reproducible, and independent of the head's draw
    if cfg.tuning == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        check_lora_targets(model, list(cfg.lora_targets))
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
        )
        try:
            model = inject_adapter_in_model(lora, model)
        except ValueError as err:
            # Every entry names a module (checked above), so peft refuses a type; its first sentence says which.
            reason = (str(err).splitlines() or [""])[0].split(". ")[0]
            raise BdrunError(
                f"model.lora_targets={list(cfg.lora_targets)} names a module LoRA cannot wrap ({reason}); "
                "name linear modules of the encoder, e.g. [query,value]"
            ) from None
    elif cfg.tuning == "adapter":
        insert_adapters(model, cfg.adapter_size)
    else:
        insert_parallel_adapters(model, cfg.adapter_size, cfg.adapter_scale)
    head = 0
    for name, param in model.named_parameters():
        trainable = is_pet_parameter(name, cfg.tuning) or name.startswith(HEAD_PREFIX)
        head += name.startswith(HEAD_PREFIX)
        param.requires_grad_(trainable)
    check(head > 0, f"model.tuning={cfg.tuning}: no classification head ('{HEAD_PREFIX}*') found to train")
    return model


def check_lora_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Every entry of ``model.lora_targets`` names a module, by peft's rule for a list (a module whose dotted
    name is the entry or ends with ``.<entry>``). peft itself fails only when no entry matches, so a typo beside
    a good entry (``[query, vlaue]``) would silently train half the intended LoRA layers."""
    names = [name for name, _ in model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    linear = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.startswith(HEAD_PREFIX)
        }
    )
    check(
        not unmatched,
        f"model.lora_targets={targets}: {', '.join(map(repr, unmatched))} names no module of the model; "
        f"use linear modules, e.g. {', '.join(linear)}",
    )


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
