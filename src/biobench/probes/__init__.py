"""Classifiers on frozen features, all behind one contract.

A probe is a frozen dataclass of its options; calling it fits on the training features
and predicts the test features:

    probe(x_train, y_train, x_test, *, seed, device) -> Predictions

`Predictions` holds the predicted labels, optional scores (probabilities or decision
values) and the hyper-parameters the probe chose. Re-identification probes
(`leave_one_out = True`) are called with the same array as train and test and never
match an example with itself.

- `Svm`: NeWT's / Ages' randomised SVC search (identical choices to scikit-learn's
  RandomizedSearchCV), with the small-data fallback to a linear SVC.
- `Ridge`: one-vs-rest ridge, alpha by CV from one eigendecomposition per fold (ImageNet,
  iNat21, iWildCam, Pl@ntNet, plankton).
- `SimpleShot`: centre, L2-normalise, nearest centroid (Birds525, KABR, Rare Species).
- `Knn`: cosine / Euclidean neighbours, optionally leave-one-out (Beluga).
- `ExemplarSvm`: one linear SVM per query, all trained at once (Leopard).
- `Logistic`: L2 logistic regression (scikit-learn's optimum).
- `Mlp`: the multi-label MLP (FishNet); labels are (n, k) multi-hot.
- `Linear`: LayerNorm + linear soft-max head trained by AdamW for fixed steps (Herbarium19).
- `OpenSet`: any probe plus a Mahalanobis detector that answers "unknown" (-1) (FungiCLEF).
- `HybridDetector`: the HDR challenge's P(hybrid) classifiers (`biobench.challenge.classifier`).

This module imports neither torch nor scikit-learn: each probe loads its implementation
module when it is first called, so task specs can name probes cheaply.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np
from jaxtyping import Float


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What a probe returns for the test rows."""

    labels: np.ndarray
    """Predicted label per test row, (m,); multi-label probes give (m, k) 0/1."""
    scores: np.ndarray | None = None
    """Optional confidence per row: P(positive) (m,), per-trait probabilities (m, k), ..."""
    params: dict = dataclasses.field(default_factory=dict)
    """Hyper-parameters the probe chose (e.g. the SVM search's draw, ridge's alpha)."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """Base of every probe: options as fields, `__call__` fits and predicts."""

    leave_one_out: ClassVar[bool] = False
    """Re-identification: called with x_test = x_train, each row predicted from the others."""
    parallel: ClassVar[bool] = False
    """Sub-tasks may be fitted in parallel worker processes (single-threaded scikit-learn work)."""
    short_name: ClassVar[str] = ""
    """Display name (`biobench tasks`; a `[tasks.NAME]` table's `probe = ...`); default: the class name, lower-cased."""

    def splits_fits(self, n_problems: int, n_jobs: int) -> bool:
        """Whether `fit_many` spreads `n_problems` fits over `n_jobs` workers better than one fit per worker job."""
        return False

    def fit_many(self, problems: list[tuple], *, seed: int, n_jobs: int) -> list[Predictions]:
        """All of a task's (x_train, y_train, x_test) at once over `n_jobs` workers (where `splits_fits`): probes that
        can split one fit into smaller pieces (the SVM search, by fold) override this."""
        raise NotImplementedError(f"{type(self).__name__} does not split its fits; the route fits one problem per worker job.")

    @classmethod
    def display_name(cls) -> str:
        """`short_name`, or the class name lower-cased for a probe that sets none."""
        return cls.short_name or cls.__name__.lower()

    any_float: ClassVar[bool] = False
    """Takes features in their own float dtype (float32 too) and converts them itself, in row chunks, so the
    probe route passes them without a float64 copy (for the others it makes one)."""

    def __call__(
        self,
        x_train: Float[np.ndarray, "n d"],
        y_train: np.ndarray,
        x_test: Float[np.ndarray, "m d"],
        *,
        seed: int,
        device: str = "cpu",
    ) -> Predictions:
        raise NotImplementedError


def _constant(y_train: np.ndarray, m: int) -> Predictions | None:
    """A training sample with one class predicts it (most probes cannot fit one class)."""
    classes = np.unique(y_train)
    if len(classes) != 1:
        return None
    return Predictions(np.full(m, classes[0]), None, {"constant": int(classes[0])})


@dataclasses.dataclass(frozen=True)
class Svm(Probe):
    """NeWT's SVC protocol (`biobench.probes.svm`)."""

    short_name: ClassVar[str] = "svm"

    min_train: int = 10
    """Below this many training examples: a plain linear SVC instead of the search."""
    min_per_class: int = 0
    """Also fall back when some class has fewer examples than this (the search's 5 folds need 5)."""

    parallel: ClassVar[bool] = True

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import svm

        pred, params = svm.fit_predict(x_train, y_train, x_test, seed=seed, min_train=self.min_train, min_per_class=self.min_per_class)
        return Predictions(pred, None, params)

    def splits_fits(self, n_problems, n_jobs):
        """Fewer problems than two per worker (Ages: 3 settings)."""
        return 1 < n_jobs and n_problems < 2 * n_jobs

    def fit_many(self, problems, *, seed, n_jobs):
        """The searches spread by (problem, fold), then the refits (`svm.fit_predict_many`); the same results as one by one."""
        from biobench.probes import svm

        kwargs = {"seed": seed, "min_train": self.min_train, "min_per_class": self.min_per_class}
        return [Predictions(pred, None, params) for pred, params in svm.fit_predict_many(problems, n_jobs=n_jobs, **kwargs)]


@dataclasses.dataclass(frozen=True)
class Ridge(Probe):
    """One-vs-rest ridge classifier with alpha chosen by cross-validation (`biobench.probes.ridge`)."""

    short_name: ClassVar[str] = "ridge"

    class_weight: Literal["balanced"] | None = None
    """'balanced' weights classes inversely to their frequency (plankton, Pl@ntNet)."""
    scoring: Literal["accuracy", "macro_f1"] = "accuracy"
    """What the CV maximises."""
    standardize: bool = True
    """Standardise features first (the seed's StandardScaler)."""
    log2_alpha: tuple[int, int] = (-15, 5)
    """Alpha grid 2 ** arange(lo, hi)."""

    any_float: ClassVar[bool] = True

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import ridge

        constant = _constant(y_train, len(x_test))
        if constant is not None:
            return constant
        # GridSearchCV's 5 stratified folds run (with a warning) while some class has 5
        # examples; with fewer everywhere, as many folds as the largest class allows, and
        # with one example per class no search (the grid's first alpha).
        n_folds = min(5, int(np.unique(y_train, return_counts=True)[1].max()))
        n_folds = n_folds if n_folds >= 2 else 1
        clf = ridge.fit(
            x_train, y_train, alphas=ridge.default_alphas(*self.log2_alpha), standardize=self.standardize,
            class_weight=self.class_weight, scoring=self.scoring, n_folds=n_folds, device=device,
        )  # fmt: skip
        return Predictions(clf.predict(x_test), None, {"alpha": clf.alpha, "cv_folds": n_folds})


@dataclasses.dataclass(frozen=True)
class SimpleShot(Probe):
    """Centre on the training mean, L2-normalise, nearest centroid (`biobench.probes.simpleshot`)."""

    short_name: ClassVar[str] = "simpleshot"

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import simpleshot

        return Predictions(simpleshot.fit_predict(x_train, y_train, x_test, device=device))


@dataclasses.dataclass(frozen=True)
class Knn(Probe):
    """Majority label of the k nearest training examples (`biobench.probes.knn`)."""

    short_name: ClassVar[str] = "knn"

    k: int = 1
    """Neighbours that vote."""
    metric: Literal["cosine", "euclidean"] = "cosine"
    """Distance."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import knn

        return Predictions(knn.fit_predict(x_train, y_train, x_test, k=self.k, metric=self.metric, device=device))


@dataclasses.dataclass(frozen=True)
class LeaveOneOutKnn(Knn):
    """Re-identification: each example gets the label of its nearest OTHER example(s)."""

    short_name: ClassVar[str] = "knn-loo"

    leave_one_out: ClassVar[bool] = True

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import knn

        _same_rows(x_train, x_test)
        return Predictions(knn.leave_one_out(x_train, y_train, k=self.k, metric=self.metric, device=device))


@dataclasses.dataclass(frozen=True)
class ExemplarSvm(Probe):
    """Leopard's exemplar SVMs: each example's label is that of the other example its SVM ranks first."""

    short_name: ClassVar[str] = "exemplar-svm"

    c: float = 0.1
    """LinearSVC's C."""
    n_iter: int = 100
    """Solver steps."""
    batch: int = 1024
    """Queries solved at once (memory grows with batch x examples)."""

    leave_one_out: ClassVar[bool] = True

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import exemplar_svm

        _same_rows(x_train, x_test)
        best = exemplar_svm.best_matches(x_train, c=self.c, n_iter=self.n_iter, device=device, batch=self.batch)
        return Predictions(np.asarray(y_train)[best], None, {"c": self.c})


@dataclasses.dataclass(frozen=True)
class Logistic(Probe):
    """L2-regularised logistic regression (`biobench.probes.logistic`); scores are class probabilities."""

    short_name: ClassVar[str] = "logistic"

    c: float = 1.0
    """Inverse regularisation strength, as scikit-learn's C."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import logistic

        constant = _constant(y_train, len(x_test))
        if constant is not None:
            return constant
        model = logistic.fit(x_train, y_train, c=self.c, device=device)
        return Predictions(model.predict(x_test), model.predict_proba(x_test), {"c": self.c})


@dataclasses.dataclass(frozen=True)
class Mlp(Probe):
    """Multi-label MLP (`biobench.probes.mlp`): y is (n, k) multi-hot; scores are per-trait probabilities."""

    short_name: ClassVar[str] = "mlp"

    hidden: int = 512
    """Hidden layer width."""
    epochs: int = 100
    """Passes over the training set."""
    lr: float = 5e-4
    """Adam learning rate."""
    threshold: float = 0.5
    """A trait is predicted present when its probability exceeds this."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import mlp

        cfg = mlp.MlpConfig(hidden=self.hidden, epochs=self.epochs, lr=self.lr, threshold=self.threshold)
        labels, prob = mlp.fit_predict(x_train, y_train, x_test, seed=seed, cfg=cfg, device=device)
        return Predictions(labels, prob, {"hidden": self.hidden, "epochs": self.epochs, "lr": self.lr})


@dataclasses.dataclass(frozen=True)
class HybridDetector(Probe):
    """The HDR challenge's P(hybrid) probes (standardise, then 'svc' or 'sgd'; classes balanced).

    Labels are 1 = hybrid; scores are the log-odds of hybrid (what the challenge ranks; they
    never saturate the way probabilities do).
    """

    short_name: ClassVar[str] = "hybrid-detector"

    kind: Literal["svc", "sgd"] = "svc"
    """'svc': RBF SVC with Platt probabilities; 'sgd': logistic regression by SGD."""
    where: str = "training sample"
    """Names the training set in error messages."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.challenge import classifier

        clf = classifier.fit(self.kind, x_train, y_train, seed=seed, where=self.where)
        score = classifier.hybrid_score(clf, x_test)
        return Predictions((score > 0).astype(np.int64), score, {"classifier": self.kind})


@dataclasses.dataclass(frozen=True)
class Linear(Probe):
    """LayerNorm + linear head, AdamW with cosine decay (`biobench.probes.linear`); scores are class probabilities."""

    steps: int = 10_000
    """Optimiser steps."""
    batch_size: int = 2048
    """Examples per step."""
    lr: float = 3e-4
    """Peak learning rate (decays to lr / 100)."""
    weight_decay: float = 1e-2
    """On the linear weights only."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import linear

        constant = _constant(y_train, len(x_test))
        if constant is not None:
            return constant
        cfg = linear.LinearConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay)
        pred, prob = linear.fit_predict(x_train, y_train, x_test, seed=seed, cfg=cfg, device=device)
        return Predictions(pred, prob, {"steps": self.steps, "lr": self.lr, "weight_decay": self.weight_decay})


@dataclasses.dataclass(frozen=True)
class OpenSet(Probe):
    """`base`'s labels, except that test rows far from every training class (Mahalanobis) get `unknown`
    (`biobench.probes.openset`); scores are the squared distances to the nearest class mean."""

    base: Probe = SimpleShot()
    """The closed-set probe for the rows kept as known."""
    quantile: float = 0.95
    """Rejection threshold: this quantile of the training examples' own distances."""
    unknown: int = -1
    """The label given to rejected rows."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        from biobench.probes import openset

        known = self.base(x_train, y_train, x_test, seed=seed, device=device)
        _, codes = np.unique(np.asarray(y_train), return_inverse=True)
        det = openset.fit(x_train, codes, quantile=self.quantile, device=device)
        d2 = openset.min_distance(det, x_test, device=device)
        labels = np.where(d2 > det.threshold, self.unknown, np.asarray(known.labels))
        return Predictions(labels, d2, {**known.params, "threshold": det.threshold, "rejected": int((d2 > det.threshold).sum())})


def _same_rows(x_train: np.ndarray, x_test: np.ndarray) -> None:
    if x_train is not x_test and (x_train.shape != x_test.shape or not np.array_equal(x_train, x_test)):
        raise ValueError("A leave-one-out probe needs x_test to be x_train (every example is a query against the others).")


__all__ = [
    "ExemplarSvm", "HybridDetector", "Knn", "LeaveOneOutKnn", "Linear", "Logistic", "Mlp", "OpenSet", "Predictions", "Probe",
    "Ridge", "SimpleShot", "Svm",
]  # fmt: skip
