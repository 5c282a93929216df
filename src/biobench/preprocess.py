"""Named feature-preprocessing steps, fitted on a sub-task's training rows and applied to both sets.

A task spec lists its steps by name (`preprocess = ("l2", "centre", "l2")`); the probe
route applies them in order to each sub-task's training and test features, in float64.

- `l2`: divide each row by its L2 norm (rows of zeros stay zero).
- `centre`: subtract the training mean.
- `standardise`: subtract the training mean, divide by the training standard deviation
  (a constant feature keeps scale 1, as scikit-learn's StandardScaler does).

NeWT's protocol is `("l2", "centre", "l2")`: global L2 normalisation, then per task
centring on the training mean and L2 again (the seed's `l2_normalize(x - mean)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from jaxtyping import Float

Pair = tuple[Float[np.ndarray, "n d"], Float[np.ndarray, "m d"]]


def l2(x_train: np.ndarray, x_test: np.ndarray) -> Pair:
    return _l2(x_train), _l2(x_test)


def centre(x_train: np.ndarray, x_test: np.ndarray) -> Pair:
    mean = x_train.mean(axis=0, keepdims=True)
    return x_train - mean, x_test - mean


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> Pair:
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


STEPS: dict[str, Callable[[np.ndarray, np.ndarray], Pair]] = {"l2": l2, "centre": centre, "standardise": standardise}


def check(steps: Sequence[str], where: str) -> None:
    """Raise ValueError naming `where` for an unknown step."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"{where}: unknown preprocessing step(s) {unknown}; known: {', '.join(STEPS)}.")


def apply(steps: Sequence[str], x_train: np.ndarray, x_test: np.ndarray) -> Pair:
    """Run `steps` in order; each is fitted on the (already transformed) training rows."""
    for name in steps:
        x_train, x_test = STEPS[name](x_train, x_test)
    return x_train, x_test
