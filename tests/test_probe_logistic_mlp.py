"""Logistic regression against scikit-learn's optimum; the multi-label MLP learns and is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.linear_model

from biobench import stats
from biobench.probes import logistic, mlp


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_matches_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, size=150)
    x = rng.normal(size=(150, 6)) + np.eye(n_classes, 6)[y] * 1.5
    ref = sklearn.linear_model.LogisticRegression(C=0.7, tol=1e-10, max_iter=10000).fit(x, y)
    ours = logistic.fit(x, y, c=0.7)
    xq = rng.normal(size=(80, 6))
    assert ours.coef == pytest.approx(ref.coef_, abs=1e-4)
    assert ours.intercept == pytest.approx(ref.intercept_, abs=1e-4)
    assert ours.predict_proba(xq) == pytest.approx(ref.predict_proba(xq), abs=1e-5)
    assert np.array_equal(ours.predict(xq), ref.predict(xq))


def test_mlp_learns_multilabel_traits_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)).astype(np.float32)
    # Traits that need a nonlinearity (the seed's MLP had none): XOR and a band.
    y = np.stack([(x[:, 0] * x[:, 1] > 0), (np.abs(x[:, 2]) > 0.7), (x[:, 3] > 0)], axis=1).astype(int)
    cfg = mlp.MlpConfig(epochs=40, hidden=64, dropout=0.1, lr=3e-3)
    pred, prob = mlp.fit_predict(x[:800], y[:800], x[800:], seed=1, cfg=cfg)
    assert ((prob > 0.5) == pred).all() and pred.shape == (200, 3)
    assert stats.multilabel_mean_f1(y[800:], pred) > 0.85
    # A linear probe cannot learn XOR: the nonlinearity matters.
    linear = logistic.fit(x[:800], y[:800, 0]).predict(x[800:])
    assert stats.macro_f1(y[800:, 0], pred[:, 0]) > stats.macro_f1(y[800:, 0], linear) + 0.2
    pred2, prob2 = mlp.fit_predict(x[:800], y[:800], x[800:], seed=1, cfg=cfg)
    assert np.array_equal(prob, prob2)
    with pytest.raises(ValueError, match="multi-hot"):
        mlp.fit_predict(x, y[:, 0], x)
