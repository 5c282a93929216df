"""The label checks probes share: one label per row, at least two classes, classes as codes 0..C-1."""

from __future__ import annotations

import numpy as np


def encode(x, y, probe: str) -> tuple[np.ndarray, np.ndarray]:
    """(classes, codes) of labels `y` for rows `x`; ValueError naming `probe` when they cannot be fit."""
    y = np.asarray(y)
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels.")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{probe} needs at least two classes; got {classes.tolist()}.")
    return classes, codes
