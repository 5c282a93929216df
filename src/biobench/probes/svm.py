"""The SVM protocol of NeWT (Van Horn et al., CVPR 2021) as biobench and small_data_metrics ran it.

With at least `MIN_SEARCH_TRAIN` training examples: standardise, then a randomised
search over an SVC's kernel (rbf, linear, sigmoid, poly), C (log-uniform 1e-3..10) and
gamma (log-uniform 1e-4..1e-3), 100 draws, 5-fold stratified cross-validation, refit on
all training data. Below that, a plain linear SVC (C = 1) on the unscaled features,
since 5-fold search is meaningless on a handful of images. With a single class in the
training sample the probe predicts that class.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm
from jaxtyping import Float, Int

MIN_SEARCH_TRAIN = 10
N_DRAWS = 100
N_FOLDS = 5


def search_space() -> dict:
    return {
        "svc__C": scipy.stats.loguniform(a=1e-3, b=1e1),
        "svc__kernel": ["rbf", "linear", "sigmoid", "poly"],
        "svc__gamma": scipy.stats.loguniform(a=1e-4, b=1e-3),
    }


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, " n"],
    x_test: Float[np.ndarray, "m d"],
    *,
    seed: int,
) -> tuple[Int[np.ndarray, " m"], dict]:
    """Fit the NeWT SVM protocol and predict `x_test`. Returns (predictions, chosen hyper-parameters)."""
    classes = np.unique(y_train)
    if len(classes) == 1:
        return np.full(len(x_test), classes[0]), {"constant": int(classes[0])}
    if len(y_train) < MIN_SEARCH_TRAIN:
        clf = sklearn.svm.SVC(kernel="linear")
        clf.fit(x_train, y_train)
        return clf.predict(x_test), {"svc__kernel": "linear", "svc__C": 1.0}
    search = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        search_space(),
        n_iter=N_DRAWS,
        cv=N_FOLDS,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Some draws (e.g. sigmoid kernels on few examples) fail to converge or leave a
        # fold with one class; the search scores them as failures, which is the protocol.
        warnings.simplefilter("ignore")
        search.fit(x_train, y_train)
    params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in search.best_params_.items()}
    return search.predict(x_test), params
