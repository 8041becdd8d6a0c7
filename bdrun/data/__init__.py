"""Datasets: the in-memory representation and the loaders for every supported on-disk format."""

from bdrun.data.dataset import Splits, TextDataset
from bdrun.data.loading import DatasetConfig, load_splits

__all__ = ["DatasetConfig", "Splits", "TextDataset", "load_splits"]
