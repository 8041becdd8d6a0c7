"""CACC and ASR, the protocol every paper here uses.

CACC: accuracy on the clean test set. ASR: take the test samples whose true label is *not* the target label,
insert the trigger (seeded), and count the fraction predicted as the target. Samples that already belong to
the target class never count, so an ASR cannot be inflated by inputs the model would call "target" anyway.

Online detectors (:class:`~bdrun.defenses.base.Detector`) are scored on the same two input sets: clean test
inputs (negatives) against triggered non-target test inputs (positives). A detector screens only the inputs the
model assigns to its protected label (:meth:`Detector.screened`), so AUROC, FAR and FRR are computed on those, as the
DAN and RAP papers do. FAR at FRR 1% / 5% uses thresholds that the detector set on its held-out (dev) clean
scores when it was fitted, as the official DAN and RAP evaluations do, never thresholds set on the test scores.
A rejected input gets the prediction :data:`REJECTED`, so a rejected clean input is an
error and a rejected triggered input is not a success; CACC and ASR after rejection count every input.

Batched prediction, accuracy and the held-out FRR thresholds live one level down, in :mod:`bdrun.inference`,
because the defenses and the stage context use them too and this module sits above both.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from bdrun.attacks import Attack
from bdrun.data import TextDataset
from bdrun.inference import accuracy, predict

if TYPE_CHECKING:  # annotations only: evaluation sits above the context and the defenses, never below
    from bdrun.context import StageContext
    from bdrun.defenses.detector import Detector

REJECTED = -1  # the "prediction" of an input that a detector rejects


def triggered_test_inputs(test: TextDataset, attack: Attack, seed: int) -> list[str]:
    """The ASR inputs: every non-target test sample with the trigger inserted."""
    rng = random.Random(seed)
    return [
        attack.insert_trigger(text, rng)
        for text, label in zip(test.texts, test.labels, strict=True)
        if label != attack.target_label
    ]


def attack_success_rate(predictions: Sequence[int], target_label: int) -> float:
    """Fraction of triggered non-target inputs classified as the target."""
    return sum(p == target_label for p in predictions) / len(predictions)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: TextDataset,
    attack: Attack,
    *,
    seed: int,
    **predict_args,
) -> tuple[dict[str, float], list[int]]:
    """Metrics of one model, and its clean test predictions (kept for instance-wise comparisons)."""
    clean_predictions = predict(model, tokenizer, test.texts, desc="evaluate clean", **predict_args)
    metrics = {"cacc": accuracy(clean_predictions, test.labels), "test_samples": float(len(test))}
    if attack.has_trigger:
        triggered = triggered_test_inputs(test, attack, seed)
        if triggered:
            predictions = predict(model, tokenizer, triggered, desc="evaluate triggered", **predict_args)
            metrics["asr"] = attack_success_rate(predictions, attack.target_label)
            metrics["asr_samples"] = float(len(triggered))
    return metrics, clean_predictions


def detection_metrics(
    clean_scores: np.ndarray, triggered_scores: np.ndarray, thresholds: dict[float, float] | None = None
) -> dict[str, float]:
    """AUROC (clean = 0, triggered = 1) and, given ``thresholds``, FAR and the test FRR at each of them.

    ``thresholds`` maps an FRR to the threshold a detector set for it on its *held-out* clean scores
    (:func:`frr_thresholds`), as the official DAN and RAP evaluations do; setting them on the test clean scores
    would be an oracle. FAR = share of triggered inputs not flagged (score <= threshold); ``frr_at_frrN`` is
    the share of clean test inputs flagged at that threshold, which is near N% only if held-out and test agree.
    """
    scores = np.concatenate([clean_scores, triggered_scores])
    labels = np.concatenate([np.zeros(len(clean_scores)), np.ones(len(triggered_scores))])
    from sklearn.metrics import roc_auc_score  # here, not at the top: importing sklearn costs every job ~1-3 s

    metrics = {"auroc": float(roc_auc_score(labels, scores))}
    for frr, threshold in (thresholds or {}).items():
        metrics[f"far_at_frr{round(100 * frr)}"] = float(np.mean(triggered_scores <= threshold))
        metrics[f"frr_at_frr{round(100 * frr)}"] = float(np.mean(clean_scores > threshold))
    return metrics


def evaluate_detector(
    model: torch.nn.Module,
    detector: Detector,
    test: TextDataset,
    attack: Attack,
    context: StageContext,
) -> tuple[dict[str, float], dict[str, list]]:
    """Detection metrics, CACC / ASR after rejection at the fitted threshold, and the added inference cost.

    The cost is the wall time of ``detector.score`` over the time of plain prediction on the same inputs in the
    same process (``latency_ratio``; 1.0 = as costly as inference itself).
    """
    if detector.config.test_subset is not None:  # costly detectors (STRIP) may score a seeded subset
        test = test.sample(detector.config.test_subset, context.seed)
    inputs = {"clean": test.texts}
    triggered = triggered_test_inputs(test, attack, context.seed) if attack.has_trigger else []
    if triggered:
        inputs["triggered"] = triggered
    started = time.perf_counter()
    predictions = {name: context.predict(model, texts, desc=f"evaluate {name}") for name, texts in inputs.items()}
    plain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = {name: detector.score(model, texts, context) for name, texts in inputs.items()}
    detector_seconds = time.perf_counter() - started
    screened = {name: detector.screened(predictions[name]) for name in inputs}
    flagged = {name: screened[name] & (scores[name] > detector.threshold) for name in inputs}
    kept = {
        name: [REJECTED if f else p for p, f in zip(predictions[name], flagged[name], strict=True)] for name in inputs
    }
    count = sum(len(texts) for texts in inputs.values())
    metrics = {
        "cacc": accuracy(kept["clean"], test.labels),
        "test_samples": float(len(test)),
        "screened_clean": float(screened["clean"].sum()),
        "frr": float(flagged["clean"][screened["clean"]].mean()) if screened["clean"].any() else 0.0,
        "threshold": detector.threshold,
        "plain_ms_per_input": 1000 * plain_seconds / count,
        "detector_ms_per_input": 1000 * detector_seconds / count,
        "latency_ratio": detector_seconds / plain_seconds,
    }
    if triggered:
        metrics["asr"] = attack_success_rate(kept["triggered"], attack.target_label)
        metrics["asr_samples"] = float(len(triggered))
        metrics["screened_triggered"] = float(screened["triggered"].sum())
        if screened["clean"].any() and screened["triggered"].any():  # AUROC needs both kinds of input
            metrics.update(
                detection_metrics(
                    scores["clean"][screened["clean"]],
                    scores["triggered"][screened["triggered"]],
                    detector.frr_thresholds,
                )
            )
    outputs = {
        f"{name}_{kind}": values
        for name in inputs
        for kind, values in (("predictions", predictions[name]), ("scores", scores[name].tolist()))
    }
    return metrics, outputs
