"""What the ridge task tests compare against: pixel-stats features of a fixture, and the seeds' scikit-learn search."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.examples import Examples


def pixel_features(examples: Examples, cache_dir: Path) -> np.ndarray:
    """builtin:pixel-stats features of the examples' images, in their order."""
    backbone = load_vision_backbone("builtin", "pixel-stats")
    return get_features(backbone, examples.images, FeatureCache(cache_dir), EmbedSettings("cpu", 64, 0, "stat")).features


def seed_search(x, y, *, log2_alpha=(-15, 5), class_weight=None, scoring=None):
    """The seeds' GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier(class_weight)), 2 ** arange(lo, hi)), fitted."""
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing

    ridge = sklearn.linear_model.RidgeClassifier(class_weight=class_weight)
    pipe = sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), ridge)
    grid = {"ridgeclassifier__alpha": np.power(2.0, np.arange(*log2_alpha))}
    return sklearn.model_selection.GridSearchCV(pipe, grid, scoring=scoring).fit(x, y)
