"""The run: train clean → poison → purify → evaluate, each stage cached by its content key.

::

    clean      = train(pretrained, clean train set)              key: model, data, optimizer, trainer, seed
    backdoored = poison(pretrained or clean, attack)             key: (the above or clean's key) + attack
    purified   = purify(backdoored, defense, small clean set)    key: backdoored's key + defense + training
    metrics    = evaluate(each model, test set, trigger)         key: model's key + attack + test set + seed

Each non-clean model's metrics also get ``side_effect``: the fraction of clean test predictions that differ
from the clean model's (the instance-wise side effect), read from the evaluate stages' ``predictions.json``.

An online detector leaves the weights alone (``defense.changes_weights`` is false): its purify stage caches the
fitted detector instead of weights, and the "purified" role is the backdoored model behind that detector.

The run asks the attack and the defense what they need (``attack.backdoors``, ``attack.needs_clean_model``,
``defense.defends``, ``defense.changes_weights``) rather than switching on their kind; the stages ask them how
to build (:meth:`bdrun.attacks.base.Attack.backdoor`, :meth:`bdrun.defenses.base.Defense.build`).

A sweep over defenses therefore poisons once, a sweep over model-editing attacks trains the clean model once,
and rerunning a finished command only reads JSON files.

Where the pieces live: the experiment's schema and checks in :mod:`bdrun.experiment`; the settings (central,
federated) in the registry :mod:`bdrun.settings`, each a class of stages with their cache keys
(:mod:`bdrun.stages`, :mod:`bdrun.federated.stages`); the run here; what a run prints and logs (its console
table, flat tracker metrics, W&B tags) in :mod:`bdrun.run_summary`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bdrun.cache import Artifact, check_root
from bdrun.data import Splits, load_splits
from bdrun.errors import check
from bdrun.experiment import Experiment, check_label_indices, check_model_shape, parse_experiment
from bdrun.progress import console, print_whole
from bdrun.run_summary import config_tags, flatten, results_table
from bdrun.settings import make_stages
from bdrun.stages import WEIGHTS, Stages
from bdrun.tracking import Tracker
from bdrun.training import use_tf32
from bdrun.trust import COLLAPSED, TRUST_KEYS, collapse_warning, trust_metrics

# Re-exported: tests, scripts and the command line import these from here, where they lived before the split.
__all__ = [
    "WEIGHTS",
    "Experiment",
    "Stages",
    "add_trust",
    "check_label_indices",
    "check_model_shape",
    "config_tags",
    "make_stages",
    "parse_experiment",
    "results_table",
    "run",
]


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
        if role == "purified" and not exp.defense.changes_weights:
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
    attack, defense = exp.attack, exp.defense
    check(exp.clean or attack.backdoors, "clean=false with attack=none leaves nothing to run; pick an attack")
    use_tf32(exp.device, exp.trainer.tf32)  # for evaluation too (train() sets it for training)
    splits = load_splits(exp.dataset, exp.data_dir)
    check_label_indices(exp, splits.num_labels)
    attack.check_data(splits.train)  # e.g. enough samples to poison: fail now, not after training
    attack.check_test(splits.test)  # e.g. a paraphrase of every ASR input (attack=syntactic)
    defense.check_data(splits, exp.seed)
    exp.federated.check_data(splits.train.labels, exp.seed)  # every client gets data
    check_model_shape(exp, splits.num_labels)
    check_root(exp.cache_dir)  # an unusable cache folder: one line now, not a traceback from the first stage
    stages = make_stages(exp, splits)
    attack.check_tokenizer(stages.tokenizer)

    # clean=false: no clean reference. A data-poisoning attack trains from the pre-trained model, so the clean
    # model is never trained; a model-editing attack (EP, surgery) edits the clean model, so it is still
    # trained (or reused) as the attack's starting point, but neither evaluated nor reported.
    clean = stages.train_clean() if exp.clean or attack.needs_clean_model else None
    models = {"clean": clean} if exp.clean else {}
    if attack.backdoors:
        models["backdoored"] = stages.poison(clean)
    suspect = models.get("backdoored", clean)
    if defense.defends:
        models["purified"] = stages.purify(suspect)

    # A detector changes no weight: its role is the suspect model behind the fitted detector, with the suspect's
    # predictions (so no side effect of its own).
    behind_detector = set() if defense.changes_weights else {"purified"}
    evaluated: dict[str, Artifact] = {}
    for role, artifact in models.items():
        if role in behind_detector:
            evaluated[role] = stages.evaluate(suspect, role, detector=artifact)
        else:
            evaluated[role] = stages.evaluate(artifact, role)
    report: dict[str, Any] = {role: a.meta()["metrics"] for role, a in evaluated.items()}
    collapsed = add_trust(report, evaluated, exp, splits)
    for role in evaluated.keys() - {"clean"} - behind_detector if exp.clean else ():
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
