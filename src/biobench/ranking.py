"""Ranking metrics of the text route: retrieval Recall@k and INQUIRE's AP, nDCG and MRR.

- `recall_hits`: per query, whether any of its positives is among the k most similar
  candidates (LAION CLIP_benchmark's definition: a query with several positives, an image
  with several captions, is a hit when any one is in the top k). Ties are broken by
  candidate order (the earlier candidate ranks first), so results never depend on a sort's
  whims.
- `ap`, `ndcg`, `mrr`: INQUIRE's `metrics.py` (Vendrow et al. 2024). AP is scikit-learn's
  average precision of the retrieved list, rescaled by (positives retrieved) /
  min(all positives, k), so missed positives count; nDCG is scikit-learn's (tied scores
  share their gains), with every positive that was not retrieved appended at the bottom;
  MRR ranks by score with ties broken as INQUIRE's `np.flip(np.argsort(...))` does (the later
  candidate first) and is 0 without a positive.
- `random_ap`: the expected AP of a random ordering, a query's chance level.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float

from biobench import stats


def recall_hits(sims: Float[np.ndarray, "q c"], positives: Bool[np.ndarray, "q c"], k: int) -> Float[np.ndarray, " q"]:
    """1.0 where one of a query's positives is among its `k` most similar candidates (ties: earlier candidate first)."""
    order = np.argsort(-np.asarray(sims, dtype=np.float64), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(np.asarray(positives, dtype=bool), order, axis=1).any(axis=1).astype(np.float64)


def random_recall(n_candidates: int, n_positives: np.ndarray, k: int) -> Float[np.ndarray, " q"]:
    """Expected recall@k of a random ordering: 1 - C(N - P, k) / C(N, k)."""
    n_positives = np.asarray(n_positives)
    k = min(k, n_candidates)
    miss = np.ones(len(n_positives))
    for i in range(k):
        miss *= np.clip((n_candidates - n_positives - i) / (n_candidates - i), 0.0, 1.0)
    return 1.0 - miss


def ap(y_true: np.ndarray, scores: np.ndarray, count_pos: int | None = None) -> float:
    """INQUIRE's AP of a retrieved list (all of it: k = its length): scikit-learn's AP x retrieved positives / min(count_pos, k)."""
    y_true = np.asarray(y_true).astype(np.int64)
    k, found = len(y_true), int(y_true.sum())
    count_pos = found if count_pos is None else count_pos
    if found == 0 or count_pos == 0:
        return 0.0
    return float(stats.average_precision(y_true, scores)) * found / min(count_pos, k)


def ndcg(y_true: np.ndarray, scores: np.ndarray, count_pos: int | None = None, k: int | None = None) -> float:
    """INQUIRE's nDCG@k (k: the retrieved list's length unless given): positives not retrieved are appended with
    score -100; tied scores share their gains (scikit-learn)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    k = len(y_true) if k is None else k
    scores = np.asarray(scores, dtype=np.float64)
    unknown = 0 if count_pos is None else max(int(count_pos - y_true.sum()), 0)
    y_true = np.r_[y_true, np.ones(unknown)]
    scores = np.r_[scores, np.full(unknown, -100.0)]
    n = len(y_true)
    k = min(k, n)
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    discount[k:] = 0.0
    levels, inverse = np.unique(-scores, return_inverse=True)  # groups of tied scores, best first
    gain = np.bincount(inverse, weights=y_true, minlength=len(levels)) / np.bincount(inverse, minlength=len(levels))
    sizes = np.bincount(inverse, minlength=len(levels))
    ends = np.cumsum(sizes)
    group_discount = np.add.reduceat(discount, ends - sizes)
    dcg = float((gain * group_discount).sum())
    ideal = float((np.sort(y_true)[::-1] * discount).sum())
    return dcg / ideal if ideal > 0 else 0.0


def mrr(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Reciprocal rank of the first positive, ranked by score as INQUIRE does (ties: later candidate first); 0 without one."""
    order = np.flip(np.argsort(np.asarray(scores), kind="stable"))
    hits = np.flatnonzero(np.asarray(y_true)[order] == 1)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def random_ap(n: int, n_positives: int) -> float:
    """Expected AP of a uniformly random ordering of `n` candidates, `n_positives` of them relevant."""
    if n_positives == 0:
        return 0.0
    if n == 1:
        return 1.0
    h = float(np.sum(1.0 / np.arange(1, n + 1)))
    return h / n + (n_positives - 1) / (n - 1) * (1 - h / n)
