"""``model.tuning=lora`` with every attack and defense on the 2-layer model: each runs, or (EP, surgery)
refuses in one line before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors import safe_open

from bdrun.configs import CONF_DIR
from bdrun.errors import BdrunError
from bdrun.federated.aggregators import AGGREGATORS
from bdrun.pipeline import WEIGHTS, parse_experiment, run
from bdrun.tracking import NoTracker, TrackerConfig
from tests.conftest import PRETRAINED, compose_config

# Federated aggregators need federated=...; they are covered by tests/federated (updates are the trainable
# parameters, so PET federations exchange only PET and head tensors).


def aggregator_choice(path: Path) -> bool:
    """Whether a defense choice is an aggregator: its own name, or the choice it extends (dim_krum_full)."""
    cfg = OmegaConf.load(path)
    extends = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return cfg.get("name", extends[0] if extends else path.stem) in AGGREGATORS.names()


DEFENSES = sorted(p.stem for p in (CONF_DIR / "defense").glob("*.yaml") if not aggregator_choice(p))
DETECTORS = {"dan", "dan_cls", "rap", "strip"}
EDITS_FROZEN_WEIGHTS = {"fine_pruning", "reinit"}  # these defenses deliberately change encoder weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one clean and one poisoned model serve every defense


@pytest.mark.parametrize("defense", DEFENSES)
def test_every_defense_runs_on_a_lora_model(defense: str, cache: Path, tmp_path: Path) -> None:
    # Detectors screen inputs predicted as the target, which the small random encoder may never predict.
    model = PRETRAINED if defense in DETECTORS else []
    exp = parse_experiment(compose_config([*model, "model.tuning=lora", f"defense={defense}"], cache_dir=cache))
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert 0 <= report["backdoored"]["asr"] <= 1
    if defense == "none" or exp.defense.kind == "detector":
        return
    trainable = {n for n, p in exp_model_params(exp)}
    purified = cache / "purify" / report["stages"]["purified"]["key"] / WEIGHTS
    with safe_open(str(purified), framework="pt") as handle:
        stored = set(handle.keys())
    assert trainable <= stored  # PET and head tensors are always stored
    if defense not in EDITS_FROZEN_WEIGHTS:
        assert stored == trainable  # the frozen encoder came through the defense untouched


def exp_model_params(exp):
    from bdrun.models import load_pretrained

    return [(n, p) for n, p in load_pretrained(exp.model, 2, exp.seed).named_parameters() if p.requires_grad]


@pytest.mark.parametrize("attack", ["badnets", "addsent", "gradient_control"])
def test_data_poisoning_attacks_run_on_a_lora_model(attack: str, cache: Path, tmp_path: Path) -> None:
    exp = parse_experiment(compose_config(["model.tuning=lora", f"attack={attack}"], cache_dir=cache))
    report = run(exp, tmp_path / "run", NoTracker(TrackerConfig("none")))
    assert 0 <= report["backdoored"]["asr"] <= 1


@pytest.mark.parametrize("tuning", ["lora", "adapter"])
@pytest.mark.parametrize("attack", ["ep", "surgery"])
def test_model_editing_attacks_refuse_pet_in_one_line(attack: str, tuning: str, tmp_path: Path) -> None:
    config = compose_config([f"model.tuning={tuning}", f"attack={attack}"], cache_dir=tmp_path)
    with pytest.raises(BdrunError, match=rf"attack={attack} edits frozen pre-trained weights") as raised:
        parse_experiment(config)  # the command line's preflight parses every job this way, before any runs
    assert "\n" not in str(raised.value)
