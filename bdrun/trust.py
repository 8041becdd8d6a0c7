"""Trust marks: the evidence beside CACC that says whether a model learned anything at all.

CACC alone cannot tell a classifier from a constant: on a test set where 89.5% of the labels are "not hate", a
model that answers "not hate" for every input scores CACC 89.5%. And an ASR of a model that predicts the target
label for every input is 100% whatever the trigger does: it measures the collapse, not a backdoor. So every
evaluated model also gets, from its clean test predictions:

- ``prediction_shares``: the share of clean test inputs predicted as each class (``{"0": 0.98, "1": 0.02}``);
- ``top_prediction`` / ``top_prediction_share``: the class predicted most often and its share;
- ``majority_rate``: the share of the test set's most frequent label (CACC of the best constant model);
- ``balanced_accuracy``: the mean over the test set's classes of the recall (0.5 for any constant binary model);
- ``collapsed``: true when the model says (nearly) one thing, i.e. ``top_prediction_share >=
  trust.collapse_share``, or its accuracy is within ``trust.majority_margin`` of ``majority_rate``. The CACC
  and ASR of a collapsed model say nothing about a backdoor or a defense; the console warns, and the sweep
  summary and ``bdrun-report`` mark its cells.

Nothing here changes a trained model or a cached stage: the marks are computed when a run reports, from the
clean test predictions the evaluate stage cached, so thresholds (``trust.*`` in ``conf/config.yaml``) are in no
cache key and changing them never retrains or re-evaluates anything. No torch import: reading results stays fast.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bdrun.errors import check

COLLAPSED = "collapsed"  # the flag's name in metrics.json (and ``role.collapsed`` in bdrun.results)
# Every metric trust_metrics() adds to a model's report.
TRUST_KEYS = (
    "prediction_shares",
    "top_prediction",
    "top_prediction_share",
    "majority_rate",
    "balanced_accuracy",
    COLLAPSED,
)
# The marks bdrun-report and the sweep summary put on cells, with their legends.
COLLAPSE_MARK = "†"
SINGLE_SEED_MARK = "‡"
COLLAPSE_LEGEND = (
    "a model of this cell collapsed: one class got at least trust.collapse_share of its clean test predictions "
    "(default 95%), or its CACC is within trust.majority_margin (default 1 point) of the majority-class rate; "
    "its CACC is that of a constant and its ASR measures the collapse, not a backdoor"
)
SINGLE_SEED_LEGEND = "one seed: no spread measured (seed-to-seed spread in bdrun's tables is 2-40 points)"


@dataclasses.dataclass
class TrustConfig:
    """The collapse thresholds (``trust`` in ``conf/config.yaml``)."""

    # One class receiving at least this share of the clean test predictions is a collapse.
    collapse_share: float = 0.95
    # Accuracy within this distance of the majority-class rate (a fraction: 0.01 = one point) is a collapse.
    majority_margin: float = 0.01

    def __post_init__(self) -> None:
        check(
            0 < self.collapse_share <= 1,
            f"trust.collapse_share={self.collapse_share} is out of range; use a fraction in (0, 1], e.g. 0.95",
        )
        check(
            0 <= self.majority_margin < 1,
            f"trust.majority_margin={self.majority_margin} is out of range; use a fraction in [0, 1), e.g. 0.01",
        )


def prediction_metrics(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, Any]:
    """Prediction distribution, majority-class rate, balanced accuracy and plain accuracy of one model's clean
    test predictions (every class of ``0..num_labels-1`` gets a share, 0.0 when never predicted)."""
    check(len(labels) > 0, "no clean test samples to evaluate; check dataset.max_samples.test")
    n = len(labels)
    predicted = Counter(predictions)
    truth = Counter(labels)
    correct = Counter(y for p, y in zip(predictions, labels, strict=True) if p == y)
    top_prediction, top_count = max(predicted.items(), key=lambda item: (item[1], -item[0]))
    recalls = [correct[c] / truth[c] for c in sorted(truth)]  # classes absent from the test set have no recall
    return {
        "prediction_shares": {str(c): predicted[c] / n for c in range(num_labels)},
        "top_prediction": top_prediction,
        "top_prediction_share": top_count / n,
        "majority_rate": max(truth.values()) / n,
        "balanced_accuracy": sum(recalls) / len(recalls),
        "accuracy": sum(correct.values()) / n,
    }


def is_collapsed(metrics: dict[str, Any], config: TrustConfig) -> bool:
    """The collapse rule (module docstring) on :func:`prediction_metrics`' output."""
    near_majority = abs(metrics["accuracy"] - metrics["majority_rate"]) <= config.majority_margin + 1e-12
    return metrics["top_prediction_share"] >= config.collapse_share or near_majority


def trust_metrics(
    predictions: Sequence[int], labels: Sequence[int], num_labels: int, config: TrustConfig
) -> dict[str, Any]:
    """What ``metrics.json`` gets beside a model's CACC: :func:`prediction_metrics` (less the accuracy, which is
    CACC already) and the ``collapsed`` flag."""
    metrics = prediction_metrics(predictions, labels, num_labels)
    metrics[COLLAPSED] = is_collapsed(metrics, config)
    del metrics["accuracy"]
    return metrics


def collapse_warning(role: str, metrics: dict[str, Any]) -> str:
    """The console's one line about a collapsed model, naming it and the evidence."""
    asr = ", and its ASR measures the collapse, not a backdoor" if "asr" in metrics else ""
    return (
        f"bdrun: warning: the {role} model collapsed: it predicts class {metrics['top_prediction']} for "
        f"{100 * metrics['top_prediction_share']:.1f}% of clean test inputs (CACC {100 * metrics['cacc']:.2f}%, "
        f"majority-class rate {100 * metrics['majority_rate']:.2f}%, balanced accuracy "
        f"{100 * metrics['balanced_accuracy']:.2f}%): its CACC is no better than predicting one class{asr}"
    )
