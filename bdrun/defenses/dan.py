"""``defense=dan``: DAN, a distance-based anomaly score over every layer (Chen et al., Findings of EMNLP 2022).

A backdoored model maps triggered inputs to the target class through features that clean inputs of that class
do not share, so in the intermediate layers a triggered input lies far from every class's clean features.
Confirmed from the official code (lancopku/DAN), as summarised in METHODS.md:

- features: the hidden states of layers 1..L (the embedding output is skipped), pooled over the tokens by the
  mean over the attention mask (default), the [CLS] position or the max (``pooling``);
- on the fitting part of the clean dev set (80 %, shuffled and seeded; the split is shared by all detectors):
  one mean per class and ONE covariance shared by the classes, estimated from the class-centred features with
  scikit-learn's ``ShrunkCovariance`` (``shrinkage`` 0.1); its precision matrix is kept;
- a layer's score is the minimum over classes of the Mahalanobis distance to the class mean;
- each layer's scores are z-normalised with their mean and std on the held-out 20 % and the layers aggregated
  by the mean (default) or the max (``aggregation``; the official "min of negated z-scores" is the same max);
- the threshold is the held-out clean scores' percentile at the target FRR, over the inputs predicted as the
  protected label: like the official evaluation, only those are screened (see :class:`Detector`).

``layers=auto`` (ours, not the paper's) replaces the plain mean over layers by a weighted mean whose weights
are fitted on clean data only: a layer's weight is how far its nearest-class-mean rule (the same means and
precisions DAN fits) beats chance at classifying the held-out clean dev inputs, ``max(acc - 1/C, 0)``,
normalised to sum 1 (all layers equal if none beats chance). The reasoning: a backdoor reaches the classifier's
decision through the layers that carry the task, so those are the ones worth watching; no triggered input and
no test number enters the choice. It needs ``aggregation=mean`` (weights have no meaning under a max).

``top_layers`` (ours, not the paper's) restricts the ensemble to the uppermost k layers. Where a backdoor shows
depends on the attack: on MiniLM a sentence trigger is visible only in the last layer's [CLS] state and EP's
poisoned embedding only in the lower layers (``scripts/dan_layer_auroc.py``), so no k suits both and the
default stays at all layers (docs/results/detectors.md).

Our reading: the distance is the *squared* Mahalanobis distance (as scikit-learn's ``mahalanobis`` returns);
ranks within a layer are the same either way, only the z-normalised scale differs. The held-out part serves
both the z-normalisation and the threshold, as in the official code.

The feature → score part (:func:`fit_dan`, :func:`dan_scores`) works on plain arrays of per-layer features so
that tests can feed it synthetic features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bdrun.context import StageContext
from bdrun.data import TextDataset
from bdrun.defenses.base import Detector, DetectorConfig, check_depth
from bdrun.defenses.registry import DEFENSES
from bdrun.errors import check

POOLINGS = ("mean", "cls", "max")
AGGREGATIONS = ("mean", "max")
LAYER_WEIGHTINGS = ("all", "auto")


@dataclasses.dataclass
class DanConfig(DetectorConfig):
    pooling: str = "mean"  # how a layer's token states become one vector: mean (over the mask), cls or max
    shrinkage: float = 0.1  # ShrunkCovariance's shrinkage toward a scaled identity
    aggregation: str = "mean"  # how the per-layer z-scores combine: mean or max (most anomalous layer)
    top_layers: int | None = None  # use only the uppermost k layers; null: all layers (the paper's ensemble)
    layers: str = "all"  # all: equal weights (the paper); auto: weights fitted on clean dev (see the docstring)
    calibration: str = "all"  # thresholds on every held-out clean score, as the official DAN code does

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.top_layers is None or self.top_layers >= 1, f"defense.top_layers={self.top_layers} must be >= 1")
        check(self.pooling in POOLINGS, f"defense.pooling={self.pooling} is not supported; use {', '.join(POOLINGS)}")
        check(0.0 <= self.shrinkage <= 1.0, f"defense.shrinkage={self.shrinkage} must be in [0, 1], e.g. 0.1")
        check(
            self.aggregation in AGGREGATIONS,
            f"defense.aggregation={self.aggregation} is not supported; use {', '.join(AGGREGATIONS)}",
        )
        check(
            self.layers in LAYER_WEIGHTINGS,
            f"defense.layers={self.layers} is not supported; use {', '.join(LAYER_WEIGHTINGS)}",
        )
        check(
            self.layers == "all" or self.aggregation == "mean",
            f"defense.layers={self.layers} weights a mean over layers; set defense.aggregation=mean",
        )


@dataclasses.dataclass
class DanStatistics:
    """What DAN keeps per layer: class means (L, C, H), shared precisions (L, H, H), z-score centre/scale (L,)
    and the layer weights of the mean (L,), equal unless fitted by ``layers=auto``."""

    means: np.ndarray
    precisions: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, tokens, hidden) → (batch, hidden), ignoring padded positions."""
    if pooling == "cls":
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(keep == 0, float("-inf")).amax(dim=1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def layer_features(
    model: torch.nn.Module, texts: Sequence[str], context: StageContext, pooling: str, top_layers: int | None = None
) -> np.ndarray:
    """Pooled hidden states of layers 1..L (or the uppermost ``top_layers`` of them) per text: (texts, L, hidden)."""

    def reduce(output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        layers = output.hidden_states[1:][-top_layers:] if top_layers else output.hidden_states[1:]
        return torch.stack([pool(h.float(), mask, pooling) for h in layers], dim=1)

    return context.forward(model, texts, reduce, desc="dan features", output_hidden_states=True).numpy()


def class_distances(features: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """Per layer and class, the squared Mahalanobis distance to the class mean: (N, L, H) → (N, L, C)."""
    centred = features[:, :, None, :] - means[None]  # (N, L, C, H)
    return np.einsum("nlch,lhk,nlck->nlc", centred, precisions, centred)


def min_mahalanobis(features: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """Per layer, the squared Mahalanobis distance to the nearest class mean: (N, L, H) → (N, L)."""
    return class_distances(features, means, precisions).min(axis=2)


def separation_weights(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``layers=auto``: per layer, nearest-class-mean accuracy above chance on labelled clean inputs, summing to 1.

    ``distances`` is (N, L, C) over the classes present in the fit, ``labels`` their indices in that order.
    """
    classes = distances.shape[2]
    accuracy = (distances.argmin(axis=2) == labels[:, None]).mean(axis=0)
    gain = np.maximum(accuracy - 1.0 / classes, 0.0)
    return gain / gain.sum() if gain.sum() > 0 else np.full(len(gain), 1.0 / len(gain))


def fit_dan(
    fitting: np.ndarray,
    labels: Sequence[int],
    calibration: np.ndarray,
    shrinkage: float,
    num_labels: int,
    calibration_labels: Sequence[int] | None = None,
) -> DanStatistics:
    """Class means and one shared shrunk covariance per layer; z-score statistics on the calibration features.

    With ``calibration_labels`` the layer weights are fitted on the calibration inputs (``layers=auto``);
    without, every layer weighs the same (the paper's mean).
    """
    labels_array = np.asarray(labels)
    present = [c for c in range(num_labels) if np.any(labels_array == c)]
    means = np.stack([fitting[labels_array == c].mean(axis=0) for c in present], axis=1)  # (L, C, H)
    from sklearn.covariance import ShrunkCovariance  # here, not at the top: sklearn costs every job 1-3 s

    precisions = []
    for layer in range(fitting.shape[1]):
        centred = fitting[:, layer] - means[layer][np.searchsorted(present, labels_array)]
        estimator = ShrunkCovariance(shrinkage=shrinkage, assume_centered=True).fit(centred)
        precisions.append(estimator.precision_)
    precisions_array = np.stack(precisions)
    distances = class_distances(calibration, means, precisions_array)
    raw = distances.min(axis=2)
    depth = fitting.shape[1]
    if calibration_labels is None:
        weights = np.full(depth, 1.0 / depth)
    else:
        weights = separation_weights(distances, np.searchsorted(present, np.asarray(calibration_labels)))
    return DanStatistics(means, precisions_array, raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-12), weights)


def dan_scores(features: np.ndarray, stats: DanStatistics, aggregation: str = "mean") -> np.ndarray:
    """The anomaly score per input (higher = more suspicious) from its per-layer features (N, L, H)."""
    z = (min_mahalanobis(features, stats.means, stats.precisions) - stats.center) / stats.scale
    return z.max(axis=1) if aggregation == "max" else z @ stats.weights


@DEFENSES.register("dan", DanConfig)
class Dan(Detector):
    config: DanConfig

    def __init__(self, config: DanConfig) -> None:
        super().__init__(config)
        self.stats: DanStatistics | None = None

    def check_model(self, depth: int) -> None:
        # Checked here only: the features would silently use every layer when top_layers exceeds the depth.
        check_depth("defense.top_layers", self.config.top_layers, depth)

    def fit_scorer(
        self, model: torch.nn.Module, fitting: TextDataset, calibration: TextDataset, context: StageContext
    ) -> dict[str, Any]:
        c = self.config
        features = layer_features(model, fitting.texts, context, c.pooling, c.top_layers)
        held_out = layer_features(model, calibration.texts, context, c.pooling, c.top_layers)
        num_labels = max(fitting.labels) + 1
        weighted = calibration.labels if c.layers == "auto" else None
        self.stats = fit_dan(features, fitting.labels, held_out, c.shrinkage, num_labels, weighted)
        weights = [round(float(w), 4) for w in self.stats.weights]
        return {"layers": int(features.shape[1]), "classes": int(self.stats.means.shape[1]), "layer_weights": weights}

    def score(self, model: torch.nn.Module, texts: Sequence[str], context: StageContext) -> np.ndarray:
        assert self.stats is not None, "fit or load the detector first"
        c = self.config
        return dan_scores(layer_features(model, texts, context, c.pooling, c.top_layers), self.stats, c.aggregation)

    def state(self) -> dict[str, torch.Tensor]:
        assert self.stats is not None, "fit the detector first"
        return {f.name: torch.from_numpy(getattr(self.stats, f.name)) for f in dataclasses.fields(DanStatistics)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = DanStatistics(**{name: tensor.numpy() for name, tensor in state.items()})
