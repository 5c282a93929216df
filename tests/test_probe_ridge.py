"""The torch ridge against scikit-learn's GridSearchCV(StandardScaler + RidgeClassifier), the seed's protocol."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.linear_model
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import torch

from biobench.probes import ridge


def blobs(seed, n=500, d=24, n_classes=6, spread=2.5, imbalance=False):
    rng = np.random.default_rng(seed)
    p = np.geomspace(1, 8, n_classes) if imbalance else np.ones(n_classes)
    y = rng.choice(n_classes, size=n, p=p / p.sum())
    centres = rng.normal(size=(n_classes, d))
    # Anisotropic, offset, unequal-variance features so standardisation and alpha both matter.
    x = centres[y] + spread * rng.normal(size=(n, d)) * rng.uniform(0.2, 3, size=d) + rng.normal(size=d) * 5
    return x, y * 3 + 1  # labels that are not 0..C-1


def sklearn_search(x, y, alphas, *, standardize=True, class_weight=None, scoring=None):
    steps = [sklearn.preprocessing.StandardScaler()] if standardize else []
    pipe = sklearn.pipeline.make_pipeline(*steps, sklearn.linear_model.RidgeClassifier(1.0, class_weight=class_weight))
    search = sklearn.model_selection.GridSearchCV(pipe, {"ridgeclassifier__alpha": alphas}, cv=5, scoring=scoring)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(x, y)


@pytest.mark.parametrize(
    "standardize, class_weight, scoring, n_classes, imbalance",
    [
        (True, None, "accuracy", 6, False),
        (True, "balanced", "macro_f1", 5, True),
        (False, None, "accuracy", 2, False),  # binary: scikit-learn fits one +1/-1 column
        (True, "balanced", "accuracy", 9, True),
    ],
)
def test_ridge_matches_sklearn_grid_search(standardize, class_weight, scoring, n_classes, imbalance):
    x, y = blobs(n_classes, n_classes=n_classes, imbalance=imbalance)
    x_test, y_test = blobs(n_classes, n=300, n_classes=n_classes, imbalance=imbalance)
    alphas = np.power(2.0, np.arange(-15, 12, 2))
    ref = sklearn_search(
        x, y, alphas, standardize=standardize, class_weight=class_weight, scoring="f1_macro" if scoring == "macro_f1" else None
    )
    ours = ridge.fit(x, y, alphas=alphas, standardize=standardize, class_weight=class_weight, scoring=scoring, dtype=torch.float64)
    assert ours.cv_scores == pytest.approx(ref.cv_results_["mean_test_score"], abs=1e-6)
    assert ours.alpha == ref.best_params_["ridgeclassifier__alpha"]
    assert np.mean(ours.predict(x_test) == ref.predict(x_test)) >= 0.995
    dec = ours.decision_function(x_test).numpy()
    ref_dec = ref.decision_function(x_test)
    if n_classes == 2:
        dec = dec[:, 1]  # our class-1 column equals scikit-learn's single column
    assert dec == pytest.approx(ref_dec, abs=1e-6)


def test_ridge_float32_scoring_keeps_choices_and_predictions():
    x, y = blobs(11, n=800, n_classes=12)
    a = ridge.fit(x, y, dtype=torch.float64)
    b = ridge.fit(x.astype(np.float32), y, dtype=torch.float32)
    assert np.mean(a.predict(x) == b.predict(x)) >= 0.995
    assert b.cv_scores == pytest.approx(a.cv_scores, abs=0.01)


def test_ridge_never_builds_a_dense_target(monkeypatch):
    """Memory O(d^2 + dC): no tensor of N x C elements is ever allocated (checked on the scoring path)."""
    x, y = blobs(3, n=3000, d=8, n_classes=40)
    seen = []
    real = ridge._scores

    def spy(z, s, alpha):
        out = real(z, s, alpha)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(ridge, "_ROW_CHUNK", 256)
    monkeypatch.setattr(ridge, "_scores", spy)
    model = ridge.fit(x, y, alphas=np.array([0.1, 1.0]))
    model.predict(x[:1000])
    # Validation folds and test rows are projected whole (n x d) but scored in row chunks.
    assert max(seen) <= 256 * 40
    assert len(seen) >= 5 * 3 + 4  # every fold's first alpha in 3 chunks of <= 256 rows; 1000 test rows in 4 chunks


def test_ridge_rejects_bad_input():
    x, y = blobs(0, n=50)
    with pytest.raises(ValueError, match="two classes"):
        ridge.fit(x, np.zeros(50))
    with pytest.raises(ValueError, match="rows"):
        ridge.fit(x, y[:-1])
    with pytest.raises(ValueError, match="scoring"):
        ridge.fit(x, y, scoring="f1")


def test_certificate_skipping_gives_the_brute_force_arg_max_for_every_alpha():
    x, y = blobs(5, n=900, d=30, n_classes=15, spread=4.0)
    xt = torch.as_tensor(x)
    codes = torch.as_tensor(np.unique(y, return_inverse=True)[1])
    s = ridge._solve(xt, torch.arange(700), codes, 15, standardize=True, balanced=False)
    z = ridge._project(xt, torch.arange(700, 900), s, torch.float64)
    alphas = np.power(2.0, np.arange(-15, 16))
    fast = ridge._predict_all_alphas(z, s, alphas)
    brute = torch.stack([ridge._scores(z, s, float(a)).argmax(1) for a in alphas])
    assert torch.equal(fast, brute)
    assert len(set(map(tuple, brute.numpy().tolist()))) > 3  # the grid does change predictions
