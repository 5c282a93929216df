"""Probes that turn frozen image features into P(hybrid), for the HDR challenge baselines and the `hybrids` task.

The challenge's baselines (https://github.com/Imageomics/HDR-anomaly-challenge,
`baselines/`) trained scikit-learn classifiers on frozen BioCLIP and DINOv2 features.
Here both kinds standardise the features first and weight the classes inversely to their
frequency (the training set has about 4% hybrids, so an unweighted probe learns to say
"not a hybrid"):

- `svc`: an RBF-kernel SVC with Platt-scaled probabilities (sigmoid calibration on
  seeded stratified folds, then the SVC refit on all data: scikit-learn's old
  `probability=True`),
- `sgd`: logistic regression fit by SGD (`loss="log_loss"`), seeded.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from jaxtyping import Float, Int

from biobench.errors import DataError

Kind = Literal["svc", "sgd"]
KINDS: tuple[str, ...] = ("svc", "sgd")


def make_classifier(kind: Kind, seed: int, *, n_folds: int = 5):
    """An unfitted scikit-learn pipeline: StandardScaler, then the probe `kind`.

    The SVC's probabilities are Platt-scaled on `n_folds` seeded stratified folds and the
    SVC is then refit on everything: what `SVC(probability=True)` did, written the way
    scikit-learn >= 1.9 asks for (`probability` is deprecated there).
    """
    import sklearn.calibration
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm

    if kind == "svc":
        probe = sklearn.calibration.CalibratedClassifierCV(
            sklearn.svm.SVC(kernel="rbf", class_weight="balanced"),
            method="sigmoid",
            cv=sklearn.model_selection.StratifiedKFold(n_folds, shuffle=True, random_state=seed),
            ensemble=False,
        )
    elif kind == "sgd":
        probe = sklearn.linear_model.SGDClassifier(loss="log_loss", class_weight="balanced", random_state=seed, max_iter=2000, tol=1e-4)
    else:
        raise DataError(f"Unknown classifier {kind!r}; use one of {', '.join(KINDS)}.")
    return sklearn.pipeline.Pipeline([("scale", sklearn.preprocessing.StandardScaler()), (kind, probe)])


def fit(kind: Kind, x: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], *, seed: int, where: str = "training set"):
    """Fit probe `kind` on features `x` with labels `y` (1 = hybrid)."""
    y = np.asarray(y).astype(int)
    n_hybrid = int(y.sum())
    if n_hybrid == 0 or n_hybrid == len(y):
        raise DataError(
            f"{where}: {n_hybrid} hybrid(s) among {len(y)} images; a hybrid detector needs both hybrids and non-hybrids to train."
        )
    n_folds = min(5, n_hybrid, len(y) - n_hybrid)
    if kind == "svc" and n_folds < 2:
        raise DataError(
            f"{where}: the svc probe calibrates its probabilities by cross-validation and needs at least 2 hybrids "
            f"and 2 non-hybrids; got {n_hybrid} and {len(y) - n_hybrid}. Train on more images or use the sgd probe."
        )
    clf = make_classifier(kind, seed, n_folds=max(n_folds, 2))
    clf.fit(np.asarray(x, dtype=np.float64), y)
    return clf


def hybrid_probability(clf, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, " n"]:
    """P(hybrid) for each row of `x` (for reading; submit `hybrid_score`, which keeps the order at the extremes)."""
    col = list(clf.classes_).index(1)
    return clf.predict_proba(np.asarray(x, dtype=np.float64))[:, col]


def hybrid_score(clf, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, " n"]:
    """The log-odds of hybrid for each row of `x`, in float64: logit(P(hybrid)) computed without
    passing through the probability.

    Probabilities saturate: an SGD logistic probe on unscaled features gives many exact 1.0s,
    non-hybrids among them, so the 95%-of-non-hybrids threshold becomes 1.0 and no hybrid
    scores strictly above it (challenge score 0 despite a useful ranking). Log-odds keep every
    distinction the model makes. For `sgd` they are the decision values; for `svc`, scikit-learn's
    Platt map P = 1 / (1 + exp(a f + b)) of the SVC's decision value f gives -(a f + b).
    """
    import sklearn.calibration

    scaled = clf[:-1].transform(np.asarray(x, dtype=np.float64))
    probe = clf[-1]
    sign = 1.0 if list(probe.classes_).index(1) == 1 else -1.0  # decision values favour classes_[1]
    if isinstance(probe, sklearn.calibration.CalibratedClassifierCV):
        (calibrated,) = probe.calibrated_classifiers_
        (sigmoid,) = calibrated.calibrators
        return sign * -(sigmoid.a_ * calibrated.estimator.decision_function(scaled) + sigmoid.b_)
    return sign * probe.decision_function(scaled).astype(np.float64)
