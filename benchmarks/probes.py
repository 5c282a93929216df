"""biobench's probes and bootstrap against the seed's scikit-learn way, in one process, on generated features.

Cases, each at up to three sizes (small / middle / large):

- ridge: the seed's `GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier(1.0)),
  {"ridgeclassifier__alpha": 2 ** arange(-15, 5)}, cv=5)` (its iWildCam/plankton form; the
  ImageNet/iNat21 modules used HalvingGridSearchCV, which fits fewer candidates on fewer
  rows) against `biobench.probes.ridge.fit` (same grid, same folds). Train sizes 5k x 512 /
  100 classes, 50k x 768 / 1,000, 200k x 768 / 10,000; test = train / 5. The reference is
  skipped at the large size: its dense 200k x 10,000 float64 target alone is 16 GB.
- bootstrap: the seed's `Report.get_confidence_interval` (a Python loop over replicates,
  each building a list of Prediction objects and averaging their scores) against
  `biobench.stats.mean_ci` (multinomial counts of the distinct scores), B = 1000, on
  10k / 100k / 1M predictions (reference skipped at 1M: about 20 minutes). A second row times the general index-array path
  (`stats.metric_ci`, what macro metrics use) on the same data.
- exemplar SVM: the seed's Leopard protocol (one `LinearSVC(C=0.1, class_weight="balanced",
  max_iter=10000, tol=1e-6)` per query, best non-self decision value; the seed's
  `argsort(...)[1]`, the second-LOWEST value, is fixed) against
  `biobench.probes.exemplar_svm`, on 1,000 x 512 and 6,800 x 768 (5 images per
  individual). The reference fits only `--exemplar-queries` queries; its time is
  extrapolated to all N (per-query fits are independent) and the top-1 delta is measured
  on those same queries.

Prints per case: seconds (reference, ours), ratio, and accuracy (reference, ours). The last
line is one JSON object measured at the middle size (or the largest size run):
{"ridge_speedup", "ridge_acc_delta", "bootstrap_speedup", "exemplar_svm_speedup",
"exemplar_svm_top1_delta", "bootstrap_index_speedup", "size"}; deltas are ours minus reference in percentage points.

    python benchmarks/probes.py [--sizes small,middle,large] [--exemplar-queries 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings

import numpy as np
import torch

from biobench import stats
from biobench.probes import exemplar_svm, ridge

SIZES = {
    # name: (ridge train n, d, classes), bootstrap n, (exemplar n, d, noise) or None
    # (exemplar noise: per-image noise around each individual's mean; 2.5 at 6,800 x 768 gives
    # leave-one-out 1-NN top-1 of 73%, a re-identification task that is neither trivial nor hopeless)
    "small": ((5_000, 512, 100), 10_000, (1_000, 512, 1.0)),
    "middle": ((50_000, 768, 1_000), 100_000, (6_800, 768, 2.5)),
    "large": ((200_000, 768, 10_000), 1_000_000, None),
}
RIDGE_REF_MAX_TARGET_BYTES = 4e9  # skip scikit-learn where its dense N x C float64 target exceeds this


def features(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class clusters with anisotropic, offset features (standardisation matters) and overlap (alpha matters)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(n_classes, d)).astype(np.float32)
    col_scale = np.random.default_rng(54321).uniform(0.3, 3.0, size=d).astype(np.float32)
    y = rng.integers(0, n_classes, size=n)
    x = (centres[y] + 5.0 * rng.standard_normal((n, d), dtype=np.float32)) * col_scale + 2.0
    return x, y


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(case: str, size: str, ref_s, ours_s, ref_acc, ours_acc, note: str = "") -> None:
    fmt = lambda v, f: format("-", ">" + f.split(".")[0]) if v is None else format(v, f)  # noqa: E731
    ratio = None if ref_s is None else ref_s / ours_s
    print(
        f"{case:<13} {size:<7} {fmt(ref_s, '10.2f')} {fmt(ours_s, '9.2f')} {fmt(ratio, '8.1f')} "
        f"{fmt(ref_acc, '8.4f')} {fmt(ours_acc, '8.4f')}  {note}",
        flush=True,
    )


def bench_ridge(size: str, n: int, d: int, n_classes: int, device: str) -> dict:
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing

    x, y = features(n, d, n_classes, seed=1)
    xt, yt = features(n // 5, d, n_classes, seed=2)
    alphas = ridge.default_alphas()
    model, ours_s = timed(lambda: ridge.fit(x, y, alphas=alphas, device=device))
    ours_acc = float(np.mean(model.predict(xt) == yt))
    if n * n_classes * 8 > RIDGE_REF_MAX_TARGET_BYTES:
        row(
            "ridge",
            size,
            None,
            ours_s,
            None,
            ours_acc,
            f"reference skipped: dense target {n * n_classes * 8 / 1e9:.0f} GB; alpha={model.alpha:g}",
        )
        return {}
    search = sklearn.model_selection.GridSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.linear_model.RidgeClassifier(1.0)),
        {"ridgeclassifier__alpha": alphas},
        cv=5,
        n_jobs=1,
    )
    _, ref_s = timed(lambda: search.fit(x, y))
    ref_acc = float(np.mean(search.predict(xt) == yt))
    ref_alpha = search.best_params_["ridgeclassifier__alpha"]
    row("ridge", size, ref_s, ours_s, ref_acc, ours_acc, f"alpha ref={ref_alpha:g} ours={model.alpha:g}")
    return {"ridge_speedup": ref_s / ours_s, "ridge_acc_delta": 100 * (ours_acc - ref_acc)}


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The seed's prediction object."""

    id: str
    score: float
    info: dict


def seed_confidence_interval(predictions: list[Prediction], n_resamples: int, seed: int) -> tuple[float, float]:
    """The seed's Report.get_confidence_interval with its default_calc_mean_score."""
    rng = np.random.default_rng(seed=seed)
    choices = rng.choice(len(predictions), size=(n_resamples, len(predictions)), replace=True)
    scores = []
    for choice in choices:
        scores.append(np.mean([p.score for p in [predictions[i] for i in choice]]).item())
    return tuple(np.percentile(scores, [2.5, 97.5]).tolist())


def bench_bootstrap(size: str, n: int) -> dict:
    rng = np.random.default_rng(3)
    correct = (rng.random(n) < 0.73).astype(np.float64)
    ours, ours_s = timed(lambda: stats.mean_ci(correct, n_resamples=1000, seed=0))
    if n > 200_000:
        row(
            "bootstrap",
            size,
            None,
            ours_s,
            None,
            ours.estimate,
            f"reference skipped (~{n / 100_000 * 2:.0f} min); CI [{ours.low:.4f}, {ours.high:.4f}]",
        )
        return {}
    # The general path (index arrays, used for macro metrics and any metric of predictions).
    idx_ci, idx_s = timed(lambda: stats.metric_ci(lambda i: stats.mean_score(correct, i), n, n_resamples=1000, seed=0))
    preds = [Prediction(str(i), float(s), {}) for i, s in enumerate(correct)]
    ref, ref_s = timed(lambda: seed_confidence_interval(preds, 1000, 0))
    row(
        "bootstrap",
        size,
        ref_s,
        ours_s,
        float(correct.mean()),
        ours.estimate,
        f"mean_ci (counts); CI ref [{ref[0]:.4f}, {ref[1]:.4f}] ours [{ours.low:.4f}, {ours.high:.4f}]",
    )
    row(
        "bootstrap_idx",
        size,
        ref_s,
        idx_s,
        float(correct.mean()),
        idx_ci.estimate,
        f"metric_ci (index arrays); CI [{idx_ci.low:.4f}, {idx_ci.high:.4f}]",
    )
    return {"bootstrap_speedup": ref_s / ours_s, "bootstrap_index_speedup": ref_s / idx_s}


def bench_exemplar(size: str, n: int, d: int, noise: float, n_queries: int, device: str) -> dict:
    import sklearn.svm

    rng = np.random.default_rng(4)
    individuals = np.repeat(np.arange(n // 5), 5)
    x = (rng.normal(size=(n // 5, d))[individuals] + noise * rng.normal(size=(n, d))).astype(np.float32)
    matches, ours_s = timed(lambda: exemplar_svm.best_matches(x, device=device))
    queries = np.random.default_rng(5).choice(n, size=min(n_queries, n), replace=False)
    ref_matches = []
    start = time.perf_counter()
    for i in queries:
        target = np.zeros(n)
        target[i] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = sklearn.svm.LinearSVC(class_weight="balanced", verbose=False, max_iter=10000, tol=1e-6, C=0.1).fit(x, target)
        sims = clf.decision_function(x)
        sims[i] = -np.inf
        ref_matches.append(int(np.argmax(sims)))
    ref_s = (time.perf_counter() - start) * n / len(queries)
    ref_top1 = float(np.mean(individuals[ref_matches] == individuals[queries]))
    ours_top1 = float(np.mean(individuals[matches[queries]] == individuals[queries]))
    row(
        "exemplar_svm",
        size,
        ref_s,
        ours_s,
        ref_top1,
        ours_top1,
        f"reference timed on {len(queries)} queries x {n / len(queries):.0f}; top-1 on those queries "
        f"(ours on all {n}: {np.mean(individuals[matches] == individuals):.4f}); same best match {np.mean(matches[queries] == ref_matches):.0%}",
    )
    return {"exemplar_svm_speedup": ref_s / ours_s, "exemplar_svm_top1_delta": 100 * (ours_top1 - ref_top1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,middle,large", help="comma-separated subset of small,middle,large")
    parser.add_argument("--cases", default="ridge,bootstrap,exemplar_svm", help="comma-separated subset of the cases")
    parser.add_argument("--exemplar-queries", type=int, default=200, help="queries the per-query LinearSVC reference fits")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    cases = set(args.cases.split(","))
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")

    print(f"device={args.device} torch_threads={torch.get_num_threads()}")
    print(f"{'case':<13} {'size':<7} {'ref_s':>10} {'ours_s':>9} {'ratio':>8} {'ref_acc':>8} {'ours_acc':>8}  note")
    summary: dict[str, dict] = {}
    for size in sizes:
        (n, d, c), n_boot, ex = SIZES[size]
        out = {}
        if "ridge" in cases:
            out |= bench_ridge(size, n, d, c, args.device)
        if "bootstrap" in cases:
            out |= bench_bootstrap(size, n_boot)
        if "exemplar_svm" in cases and ex is not None:
            out |= bench_exemplar(size, *ex, args.exemplar_queries, args.device)
        summary[size] = out
    at = "middle" if "middle" in summary else sizes[-1]
    keys = [
        "ridge_speedup",
        "ridge_acc_delta",
        "bootstrap_speedup",
        "exemplar_svm_speedup",
        "exemplar_svm_top1_delta",
        "bootstrap_index_speedup",
    ]
    print(json.dumps({k: (round(summary[at][k], 3) if k in summary[at] else None) for k in keys} | {"size": at}))


if __name__ == "__main__":
    main()
