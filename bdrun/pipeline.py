"""The experiment: train clean → poison → purify → evaluate, each stage cached by its content key.

::

    clean      = train(pretrained, clean train set)              key: model, data, optimizer, trainer, seed
    backdoored = poison(pretrained or clean, attack)             key: (the above or clean's key) + attack
    purified   = purify(backdoored, defense, small clean set)    key: backdoored's key + defense + training
    metrics    = evaluate(each model, test set, trigger)         key: model's key + attack + test set + seed

Each non-clean model's metrics also get ``side_effect``: the fraction of clean test predictions that differ
from the clean model's (the instance-wise side effect), read from the evaluate stages' ``predictions.json``.

An online detector (defense.kind == "detector") leaves the weights alone: its purify stage caches the fitted
detector instead of weights, and the "purified" role is the backdoored model behind that detector.

A sweep over defenses therefore poisons once, a sweep over model-editing attacks trains the clean model once,
and rerunning a finished command only reads JSON files.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.table import Table

from bdrun import pet
from bdrun.attacks import ATTACKS, Attack
from bdrun.cache import Artifact, StageCache, check_root, stage_key
from bdrun.configs import CONF_DIR
from bdrun.context import StageContext
from bdrun.data import DatasetConfig, Splits, load_splits
from bdrun.data.loading import load_named_train
from bdrun.defenses import DEFENSES, Defense
from bdrun.errors import boolean, check, seed_integer
from bdrun.evaluation import evaluate_detector, evaluate_model
from bdrun.federated import FederatedConfig
from bdrun.models import (
    ModelConfig,
    encoder_depth,
    load_pretrained,
    load_tokenizer,
    load_weights,
    pick_device,
    save_weights,
)
from bdrun.optimizers import OPTIMIZERS, Optimizer
from bdrun.progress import console, print_whole
from bdrun.registry import parse_config
from bdrun.tracking import Tracker
from bdrun.training import TrainerConfig, use_tf32
from bdrun.trust import COLLAPSE_MARK, COLLAPSED, TRUST_KEYS, TrustConfig, collapse_warning, trust_metrics

WEIGHTS = "model.safetensors"
# What the common training loop reports (bdrun.training.train); whatever else a data-poisoning attack's own
# training returns (gradnorm's task weights, gradient control's layer weights) is the attack's diagnostics and
# goes to metrics.json under diagnostics.backdoored.attack.
LOOP_STATS = ("steps", "final_loss", "samples_per_second", "resumed_from_step")
DETECTOR_COLUMNS = {"auroc": "AUROC", "far_at_frr1": "FAR@FRR1%", "far_at_frr5": "FAR@FRR5%", "frr": "FRR"}


@dataclasses.dataclass
class Experiment:
    """Every component of one run, validated before any work starts."""

    model: ModelConfig
    dataset: DatasetConfig
    attack: Attack
    defense: Defense
    optimizer: Optimizer
    trainer: TrainerConfig
    seed: int
    device: torch.device
    cache_dir: Path
    data_dir: Path
    federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)
    clean: bool = True  # train and evaluate the clean reference model (see run())
    trust: TrustConfig = dataclasses.field(default_factory=TrustConfig)  # collapse thresholds (bdrun/trust.py)


def parse_experiment(cfg: DictConfig) -> Experiment:
    """Every component, checked alone and together (this runs on the command line too, before any job)."""
    exp = Experiment(
        model=parse_config(ModelConfig, cfg.model, "model"),
        dataset=parse_config(DatasetConfig, cfg.dataset, "dataset"),
        attack=ATTACKS.build(cfg.attack),
        defense=DEFENSES.build(cfg.defense),
        optimizer=OPTIMIZERS.build(cfg.optimizer),
        trainer=parse_config(TrainerConfig, cfg.trainer, "trainer"),
        seed=seed_integer(cfg.seed),
        device=pick_device(str(cfg.device)),
        cache_dir=Path(cfg.paths.cache_dir),
        data_dir=Path(cfg.paths.data_dir),
        federated=parse_config(FederatedConfig, cfg.federated, "federated"),
        clean=boolean(cfg.get("clean", True), "clean"),
        trust=parse_config(TrustConfig, cfg.get("trust") or {}, "trust"),
    )
    check(
        exp.federated.enabled or exp.defense.kind != "aggregator",
        f"defense={exp.defense.config.name} is a federated aggregator; add federated=iid (or another "
        "conf/federated/ setting)",
    )
    exp.attack.check_tuning(exp.model.tuning)  # EP and surgery edit frozen weights: no PET
    if exp.federated.enabled:
        exp.attack.check_federated()  # an attack's own objective or source data: clients run neither
    return exp


def check_label_indices(exp: Experiment, num_labels: int) -> None:
    """Every knob that names a class (attack.target_label, defense.protect_label) fits the dataset's labels.

    Runs on the command line before any job (with the declared dataset.num_labels) and again once the data is
    loaded, before the first stage.
    """
    exp.attack.check_labels(num_labels)
    exp.defense.check_labels(num_labels)


def check_model_shape(exp: Experiment, num_labels: int) -> None:
    """Every knob checkable from the model's config and module names alone (``model.num_layers``,
    ``model.lora_targets``, a defense's layer count), before the first stage rather than after a training.

    Runs before the first stage, and on the command line for a model on this machine (a hub id is left to the
    job, so that checking a sweep never waits on the network)."""
    exp.defense.check_model(encoder_depth(exp.model, num_labels))


def training_fields(trainer: TrainerConfig) -> dict[str, Any]:
    """The trainer knobs that change trained weights (not eval batch size or checkpoint frequency).

    ``compile`` and ``tf32`` change only floating-point rounding, like the device (also not in the key), so a
    model trained with them is reused by a run without them. Bucketing changes the batches, so it is in the
    key, but only when on: keys written before the knob existed stay valid.
    """
    fields = dataclasses.asdict(trainer)
    for irrelevant in ("eval_batch_size", "checkpoint_every", "compile", "tf32"):
        fields.pop(irrelevant)
    if not trainer.bucketing:
        del fields["bucketing"], fields["bucket_batches"]
    return fields


class Stages:
    """Builds (or reuses) each stage's artifact for one experiment."""

    def __init__(self, exp: Experiment, splits: Splits) -> None:
        self.exp = exp
        self.splits = splits
        self.cache = StageCache(exp.cache_dir)
        self.tokenizer = load_tokenizer(exp.model)
        self._pretrained: torch.nn.Module | None = None
        # Models that train() built in this run, by (stage, key): the evaluation (and a defense) takes them from
        # memory instead of re-reading the weights just saved. Only training's output is kept: its weights are
        # all of it, whereas an editing method might leave state (hooks, flags) that its saved file does not
        # hold, and the run must evaluate exactly what the cache holds. At most two (clean, backdoored).
        self._trained: dict[tuple[str, str], torch.nn.Module] = {}
        model_fields = pet.key_fields(exp.model, dataclasses.asdict(exp.model))
        self.base = {"model": model_fields, "data": splits.fingerprint(), "seed": exp.seed}
        self.training = {"optimizer": dataclasses.asdict(exp.optimizer.config), "trainer": training_fields(exp.trainer)}
        self.poison_train, self.poison_base = splits.train, self.base
        source = exp.attack.config.source
        if source is not None and exp.attack.kind == "data":  # the attacker poisons another dataset (attack.source)
            self.poison_train, num_labels = load_named_train(
                source, CONF_DIR, exp.data_dir, exp.attack.config.source_max_train
            )
            check(
                num_labels == splits.num_labels,
                f"attack.source={source} has {num_labels} labels but dataset={exp.dataset.name} has "
                f"{splits.num_labels}; pick a source with the same labels",
            )
            self.poison_base = {**self.base, "data": self.poison_train.fingerprint()}

    # -- models -----------------------------------------------------------------------------------------------
    def pretrained(self) -> torch.nn.Module:
        """A fresh copy of the pre-trained encoder with the run's seeded classification head."""
        if self._pretrained is None:
            self._pretrained = load_pretrained(self.exp.model, self.splits.num_labels, self.exp.seed)
        return copy.deepcopy(self._pretrained)

    def load(self, artifact: Artifact, *, shared: bool = False) -> torch.nn.Module:
        """The artifact's model, from memory when this run trained it. ``shared``: the caller only reads it
        (prediction), so the in-memory model itself may be returned rather than a copy."""
        trained = self._trained.get((artifact.stage, artifact.key))
        if trained is not None:
            return trained if shared else copy.deepcopy(trained)
        return load_weights(self.pretrained(), artifact.path / WEIGHTS)

    def save(self, model: torch.nn.Module, out: Path) -> None:
        """A PET stage stores only its trained (or otherwise changed) tensors, on top of the pre-trained model."""
        self.pretrained()  # builds the reference on first use
        base = self._pretrained if self.exp.model.tuning != "full" else None
        save_weights(model, out / WEIGHTS, base=base)

    def context(self, work_dir: Path) -> StageContext:
        exp = self.exp
        return StageContext(
            self.tokenizer, exp.model, exp.trainer, exp.optimizer, exp.device, exp.seed, work_dir, self.pretrained
        )

    # -- keys: exactly the config that determines each stage's output ------------------------------------------
    def train_key(self) -> str:
        return stage_key("train", **self.base, **self.training)

    def poison_key(self, clean_key: str | None) -> str:
        attack = self.exp.attack.config.key_fields()
        if self.exp.attack.kind == "model":  # edits the cached clean model
            return stage_key("poison", victim=clean_key, attack=attack)
        return stage_key("poison", **self.poison_base, **self.training, attack=attack)

    def purify_key(self, suspect_key: str) -> str:
        defense = dataclasses.asdict(self.exp.defense.config)
        if defense.get("optimizer", "set") is None:  # the run's optimizer, already in the key (self.training)
            del defense["optimizer"]
        if self.exp.defense.revision != 1:  # the first revision adds nothing, so its keys stay as they were
            defense["revision"] = self.exp.defense.revision
        return stage_key("purify", suspect=suspect_key, defense=defense, seed=self.exp.seed, **self.training)

    def evaluate_key(self, model_key: str) -> str:
        return stage_key(
            "evaluate",
            model=model_key,
            attack=self.exp.attack.config.key_fields(),
            test=self.splits.test.fingerprint(),
            seed=self.exp.seed,
            max_length=self.exp.model.max_length,
        )

    # -- stages -----------------------------------------------------------------------------------------------
    def train_clean(self) -> Artifact:
        def build(out: Path, work: Path) -> dict[str, Any]:
            model = self.pretrained()
            stats = self.context(work).train(model, self.splits.train, desc="train clean")
            self.save(model, out)
            self._trained["train", key] = model
            return {"train": stats}

        key = self.train_key()
        return self.cache.get_or_build("train", key, build, "train: clean fine-tuning")

    def poison(self, clean: Artifact | None) -> Artifact:
        """The backdoored model; ``clean`` (None with clean=false) is used only by model-editing attacks."""
        attack = self.exp.attack
        if attack.kind == "none":
            return clean
        if attack.kind == "data":

            def build(out: Path, work: Path) -> dict[str, Any]:
                poisoned = attack.poison(self.poison_train)
                model = self.pretrained()
                stats = attack.train(model, poisoned, self.context(work))
                self.save(model, out)
                self._trained["poison", key] = model
                own = {k: v for k, v in stats.items() if k not in LOOP_STATS}
                return {"train": stats, "poisoned_samples": sum(poisoned.poisoned), **({"attack": own} if own else {})}

        else:

            def build(out: Path, work: Path) -> dict[str, Any]:
                model = self.load(clean)
                diagnostics = attack.apply(model, self.tokenizer, self.splits, self.context(work))
                self.save(model, out)
                return {"attack": diagnostics}

        label = f"poison: attack={attack.config.name}"
        key = self.poison_key(clean.key if clean else None)
        return self.cache.get_or_build("poison", key, build, label)

    def victim_train(self) -> Any:
        """The training set the victim fine-tuned on (poisoned under a data-poisoning attack; deterministic)."""
        attack = self.exp.attack
        return attack.poison(self.poison_train) if attack.kind == "data" else self.splits.train

    def purify(self, suspect: Artifact) -> Artifact:
        defense = self.exp.defense
        if defense.kind == "none":
            return suspect

        def build(out: Path, work: Path) -> dict[str, Any]:
            model = self.load(suspect)
            if defense.kind == "detector":  # fits on the suspect model; only the detector's state is cached
                diagnostics = defense.fit(model, self.splits, self.context(work))
                defense.save(out)
            else:
                context = dataclasses.replace(self.context(work), victim_train=self.victim_train())
                diagnostics = defense.purify(model, self.splits, context)
                self.save(model, out)
            return {"defense": diagnostics}

        label = f"purify: defense={defense.config.name}"
        return self.cache.get_or_build("purify", self.purify_key(suspect.key), build, label)

    def evaluate(self, model_artifact: Artifact, role: str, detector: Artifact | None = None) -> Artifact:
        """The evaluate artifact (``meta()["metrics"]``, clean test ``predictions.json``) of a model, or (with
        ``detector``) of the model behind that fitted detector."""
        exp = self.exp

        def build(out: Path, work: Path) -> dict[str, Any]:
            if detector is not None:
                exp.defense.load(detector.path)
                metrics, outputs = evaluate_detector(
                    self.load(model_artifact), exp.defense, self.splits.test, exp.attack, self.context(work)
                )
                (out / "detector_outputs.json").write_text(json.dumps(outputs))
                return {"metrics": metrics}
            metrics, predictions = evaluate_model(
                self.load(model_artifact, shared=True),
                self.tokenizer,
                self.splits.test,
                exp.attack,
                seed=exp.seed,
                max_length=exp.model.max_length,
                batch_size=exp.trainer.eval_batch_size,
                device=exp.device,
                precision=exp.trainer.precision,
            )
            (out / "predictions.json").write_text(json.dumps(predictions))
            return {"metrics": metrics}

        key = self.evaluate_key(model_artifact.key if detector is None else detector.key)
        return self.cache.get_or_build("evaluate", key, build, f"evaluate: {role} model")

    def extend_report(self, report: dict[str, Any], models: dict[str, Artifact], tracker: Tracker) -> None:
        """A setting's own additions to the report (the federated rounds); central training adds none."""


def make_stages(exp: Experiment, splits: Splits) -> Stages:
    """Central training, or the federated setting's stages (bdrun/federated/stages.py) when one is chosen."""
    if not exp.federated.enabled:
        return Stages(exp, splits)
    from bdrun.federated.stages import FederatedStages  # imports this module

    return FederatedStages(exp, splits)


def clean_predictions(evaluated: Artifact) -> list[int]:
    """A model's clean test predictions, as its evaluate stage cached them."""
    return json.loads((evaluated.path / "predictions.json").read_text())


def side_effect(clean: Artifact, other: Artifact) -> float:
    """Instance-wise side effect: the fraction of clean test inputs whose prediction differs from the clean model's."""
    before, after = clean_predictions(clean), clean_predictions(other)
    return sum(x != y for x, y in zip(before, after, strict=True)) / len(before)


def add_trust(report: dict[str, Any], evaluated: dict[str, Artifact], exp: Experiment, splits: Splits) -> list[str]:
    """Put each model's trust metrics (bdrun/trust.py) beside its CACC; return the roles that collapsed.

    Computed here from the cached predictions rather than in the evaluate stage, so that evaluate artifacts
    written before these metrics existed serve as they are and the thresholds are in no cache key. A detector
    changes no prediction: the model behind it gets the suspect model's marks (they are its own).
    """
    collapsed = []
    for role, artifact in evaluated.items():
        if role == "purified" and exp.defense.kind == "detector":
            suspect = "backdoored" if "backdoored" in report else "clean"
            trust = {k: v for k, v in report[suspect].items() if k in TRUST_KEYS}
        else:
            trust = trust_metrics(clean_predictions(artifact), splits.test.labels, splits.num_labels, exp.trust)
            if trust[COLLAPSED]:
                collapsed.append(role)
        report[role].update(trust)
    return collapsed


def run(exp: Experiment, run_dir: Path, tracker: Tracker) -> dict[str, Any]:
    """Run (or reuse) every stage, then report metrics to the run directory, the console and the tracker."""
    check(exp.clean or exp.attack.kind != "none", "clean=false with attack=none leaves nothing to run; pick an attack")
    use_tf32(exp.device, exp.trainer.tf32)  # for evaluation too (train() sets it for training)
    splits = load_splits(exp.dataset, exp.data_dir)
    check_label_indices(exp, splits.num_labels)
    exp.attack.check_data(splits.train)  # e.g. enough samples to poison: fail now, not after training
    exp.attack.check_test(splits.test)  # e.g. a paraphrase of every ASR input (attack=syntactic)
    exp.defense.check_data(splits, exp.seed)
    exp.federated.check_data(splits.train.labels, exp.seed)  # every client gets data
    check_model_shape(exp, splits.num_labels)
    check_root(exp.cache_dir)  # an unusable cache folder: one line now, not a traceback from the first stage
    stages = make_stages(exp, splits)
    exp.attack.check_tokenizer(stages.tokenizer)

    # clean=false: no clean reference. A data-poisoning attack trains from the pre-trained model, so the clean
    # model is never trained; a model-editing attack (EP, surgery) edits the clean model, so it is still
    # trained (or reused) as the attack's starting point, but neither evaluated nor reported.
    needs_clean = exp.clean or exp.attack.kind == "model"
    clean = stages.train_clean() if needs_clean else None
    models = {"clean": clean} if exp.clean else {}
    if exp.attack.kind != "none":
        models["backdoored"] = stages.poison(clean)
    suspect = models.get("backdoored", clean)
    if exp.defense.kind != "none":
        models["purified"] = stages.purify(suspect)

    evaluated: dict[str, Artifact] = {}
    for role, artifact in models.items():
        if role == "purified" and exp.defense.kind == "detector":  # the suspect model behind the fitted detector
            evaluated[role] = stages.evaluate(suspect, role, detector=artifact)
        else:
            evaluated[role] = stages.evaluate(artifact, role)
    report: dict[str, Any] = {role: a.meta()["metrics"] for role, a in evaluated.items()}
    collapsed = add_trust(report, evaluated, exp, splits)
    for role in evaluated.keys() - {"clean"} if exp.clean else ():
        if not (role == "purified" and exp.defense.kind == "detector"):  # a detector changes no prediction
            report[role]["side_effect"] = side_effect(evaluated["clean"], evaluated[role])
    if "purified" in report:
        before = report["backdoored"] if "backdoored" in report else report["clean"]
        report["delta"] = {m: report["purified"][m] - before[m] for m in ("cacc", "asr") if m in before}
    report["clean_reference"] = exp.clean  # false: no clean model evaluated, so no clean row and no side effect
    report["stages"] = {role: {"stage": a.stage, "key": a.key, "reused": a.reused} for role, a in models.items()}
    report["diagnostics"] = {
        role: {k: v for k, v in a.meta().items() if k in ("attack", "defense", "poisoned_samples")}
        for role, a in models.items()
        if role != "clean"
    }

    stages.extend_report(report, models, tracker)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print_whole(results_table(report, exp))
    for role in collapsed:  # one line each, never wrapped
        console.print(collapse_warning(role, report[role]), style="yellow", soft_wrap=True, markup=False)
    tracker.log(
        flatten({k: report[k] for k in ("clean", "backdoored", "purified", "delta", "diagnostics") if k in report})
    )
    return report


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float | str | bool):
            flat[f"{prefix}{key}"] = value
    return flat


def results_table(report: dict[str, Any], exp: Experiment) -> Table:
    title = f"attack={exp.attack.config.name} defense={exp.defense.config.name} dataset={exp.dataset.name}"
    table = Table(title=title)
    # bal. acc: balanced accuracy; majority: the majority-class rate; predicted: % of clean test inputs per class
    columns = ("model", "CACC", "bal. acc", "majority", "predicted", "ASR", "side effect", "stage")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "predicted", "stage") else "right")

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.2f}%"

    for role in ("clean", "backdoored", "purified"):
        if role in report:
            origin = report["stages"][role]
            status = f"{origin['stage']} {'reused' if origin['reused'] else 'built'}"
            metrics = report[role]
            mark = f" {COLLAPSE_MARK}" if metrics.get(COLLAPSED) else ""
            shares = "/".join(f"{100 * v:.0f}" for v in metrics.get("prediction_shares", {}).values()) or "—"
            table.add_row(
                role,
                pct(metrics["cacc"]) + mark,
                pct(metrics.get("balanced_accuracy")),
                pct(metrics.get("majority_rate")),
                shares,
                pct(metrics.get("asr")) + (mark if "asr" in metrics else ""),
                pct(metrics.get("side_effect")),
                status,
            )
    if "delta" in report:
        delta = report["delta"]
        cacc, asr = (f"{100 * delta[m]:+.2f}" if m in delta else "—" for m in ("cacc", "asr"))
        table.add_row("Δ purified", cacc, "", "", "", asr, "", "")
    detector = report.get("purified", {})
    if "latency_ratio" in detector:  # an online detector: CACC / ASR above are after rejection
        parts = [f"{label} {pct(detector[m])}" for m, label in DETECTOR_COLUMNS.items() if m in detector]
        table.caption = (
            f"detector (CACC/ASR after rejection): {', '.join(parts)}, cost ×{detector['latency_ratio']:.2f}"
        )
    if "detection_recall" in detector:  # a federated aggregator: the dropped clients as a detector
        keys = [m for m in ("precision", "recall") if f"detection_{m}" in detector]
        found = [f"{m} {pct(detector[f'detection_{m}'])}" for m in keys]
        table.caption = f"malicious-client detection over all rounds: {', '.join(found)}"
    notes = [table.caption] if table.caption else []
    if any(report[role].get(COLLAPSED) for role in ("clean", "backdoored", "purified") if role in report):
        notes.append(f"{COLLAPSE_MARK} collapsed model (bdrun/trust.py): CACC of a constant, ASR of no backdoor")
    if not report.get("clean_reference", True):
        notes.append("clean=false: no clean reference model, so no clean row and no side effect")
    table.caption = "\n".join(notes) or None
    return table


def config_tags(cfg: DictConfig) -> list[str]:
    tags = [
        f"attack={cfg.attack.name}",
        f"defense={cfg.defense.name}",
        f"dataset={cfg.dataset.name}",
        f"model={cfg.model.name}",
    ]
    federated = cfg.get("federated") or {}
    if federated.get("name", "none") != "none":
        tags.append(f"federated={federated['name']}")
    return tags
