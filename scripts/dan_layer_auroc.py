"""Where does a backdoor show? DAN's AUROC layer by layer, beside the all-layer ensemble.

For each attack, the suspect model comes from the stage cache (or is built, like ``bdrun`` would), DAN is
fitted on the clean dev set exactly as ``defense=dan`` does (same split, shrinkage and pooling), and each
layer's Mahalanobis score is scored alone on the same inputs the detector benchmark uses: a seeded subset of
the clean test set against its triggered non-target inputs, screened to those predicted as the target label.

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/dan_layer_auroc.py --attacks badnets addsent ep

Prints a markdown table (``--out`` also writes it). Settings: ``experiment=sst2_cpu``, [CLS] pooling by
default (``--pooling mean`` for the paper's default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_detectors import ATTACKS
from benchlib import REPO, pct
from hydra import compose, initialize_config_dir

from bdrun.data import load_splits
from bdrun.defenses.base import split_dev
from bdrun.defenses.dan import DanConfig, dan_scores, fit_dan, layer_features
from bdrun.evaluation import detection_metrics, triggered_test_inputs
from bdrun.pipeline import Stages, parse_experiment


def layer_aurocs(attack: str, pooling: str, test_subset: int) -> tuple[list[float], float]:
    """AUROC of each layer's score alone, and of the mean of the z-scored layers (DAN's ensemble)."""
    _, overrides = ATTACKS[attack]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=sst2_cpu", "logger=none", f"attack={attack}", *overrides])
    exp = parse_experiment(cfg)
    splits = load_splits(exp.dataset, exp.data_dir)
    stages = Stages(exp, splits)
    model = stages.load(stages.poison(stages.train_clean()))
    context = stages.context(Path(cfg.paths.cache_dir) / "tmp-dan-layers")

    dan = DanConfig(name="dan", pooling=pooling)  # the detector's own defaults: split and shrinkage
    fitting, calibration = split_dev(splits.dev, dan.fit_fraction, exp.seed)
    test = splits.test.sample(test_subset, exp.seed)
    clean, triggered = test.texts, triggered_test_inputs(test, exp.attack, exp.seed)
    features = {
        key: layer_features(model, texts, context, pooling)
        for key, texts in (("fit", fitting.texts), ("calibration", calibration.texts))
    }
    screened = {}
    for key, texts in (("clean", clean), ("triggered", triggered)):
        predictions = context.predict(model, texts)
        kept = [t for t, p in zip(texts, predictions, strict=True) if p == exp.attack.target_label]
        screened[key] = layer_features(model, kept, context, pooling)

    def auroc(layers: list[int]) -> float:
        fit, held_out = features["fit"][:, layers], features["calibration"][:, layers]
        stats = fit_dan(fit, fitting.labels, held_out, shrinkage=dan.shrinkage, num_labels=splits.num_labels)
        scores = {key: dan_scores(values[:, layers], stats) for key, values in screened.items()}
        return detection_metrics(scores["clean"], scores["triggered"])["auroc"]

    depth = features["fit"].shape[1]
    return [auroc([layer]) for layer in range(depth)], auroc(list(range(depth)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS))
    parser.add_argument("--pooling", default="cls", choices=["cls", "mean", "max"])
    parser.add_argument("--test-subset", type=int, default=400)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    lines = []
    for attack in args.attacks:
        per_layer, ensemble = layer_aurocs(attack, args.pooling, args.test_subset)
        if not lines:
            header = " | ".join(f"layer {i + 1}" for i in range(len(per_layer)))
            lines = [f"| attack | {header} | mean of all |", "|---" * (len(per_layer) + 2) + "|"]
        cells = " | ".join(pct(a, 1) for a in per_layer)
        lines.append(f"| {ATTACKS[attack][0]} | {cells} | {pct(ensemble, 1)} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
