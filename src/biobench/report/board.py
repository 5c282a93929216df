"""The leaderboard's statistics: paired-bootstrap tie groups, rank intervals and a mean with its own interval.

A column is one task (and protocol) at one `n_train`; a row is one model with one method.
Every column draws ONE matrix of bootstrap weights (how often each test unit is drawn in
each replicate), seeded by the column, and applies it to every model, so a model's
replicate r and another's are computed on the same resampled test set (a paired
bootstrap). A replicate of a model's seed-averaged score is the mean over its seeds of the
metric on the resampled test set: the seeds' training draws are held fixed.

- Units. Examples, except where the predictions carry a `group` (an individual, a video)
  and the task's metric resamples clusters (or no task spec is known): then whole groups
  are drawn (Multinomial(G, 1/G) per replicate). A metric may name another info field as
  its cluster (`Metric.cluster`: NeWT's `task`, so NeWT resamples its sub-tasks); with a
  single cluster the examples are drawn. Few-shot repeats (`rNNN:ID`) share the
  test example `ID` as their unit. Macro metrics (macro-F1, mean per-class accuracy)
  resample within class, as their stored intervals do.
- Metrics recomputed from the weights: means of per-example scores (accuracy, top-1,
  AP per query), macro-F1, mean per-class accuracy, multi-label mean F1 (as products
  with the weight matrix); a metric with its own bootstrap form `value(labels,
  predictions, idx)` (FungiCLEF's user score) on the index rows the weights count; and a
  metric whose task says how (`Metric.replicates`: hybrids' challenge score from the
  stored log-odds, labels and groups, resampled within group x hybrid). Each model's
  recomputed point estimate must match the stored score; a column whose metric cannot be
  recomputed, or a model whose predictions were not stored or cover other test examples,
  gets no tie flag and no rank interval (None), never a guessed one.
- Ties. Per column, for every model j, one-sided paired tests "j is better than k" for
  every other model k: d = s_j - s_k, p = (1 + #{d*_r - d >= d}) / (B + 1) (the
  bootstrap distribution shifted to the null, as `stats.paired_bootstrap`; p = 1 when
  d <= 0), Holm-corrected over j's M - 1 comparisons. j is significantly better than k
  when the adjusted p <= alpha. The best model (highest score) and every model it is not
  significantly better than are marked tied.
- Rank interval of a model m (LMArena's rule): best rank 1 + #{models significantly
  better than m}, worst rank M - #{models m is significantly better than}.
- Mean column: only for a model with a result in EVERY column of the board (otherwise
  no mean, shown as "k/T tasks"); its replicate r is the mean over columns of its
  replicate r there: every task's test set resampled jointly, the same indices for every
  model. Ties and ranks follow the same tests.
- Intervals shown in cells: the percentile interval of the replicates (guarded to contain
  the estimate), combined in quadrature with the spread across seeds (1.96 sd /
  sqrt(seeds)), as `across_seed_interval` does for stored intervals; with one seed it is
  the percentile interval alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import re
import sqlite3
import statistics
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float

from biobench import stats

logger = logging.getLogger(__name__)

ALPHA = 0.05
N_RESAMPLES = 1000
MEAN_METRICS = ("accuracy", "top1")
"""Metrics that are the mean of the per-example scores (other names are checked against the stored score)."""
MACRO = ("macro_f1", "mean_per_class_accuracy")
MULTILABEL = ("mean_f1",)
_REPEAT = re.compile(r"^r\d+:")


@dataclasses.dataclass
class Cell:
    """One model's result in one column (or in the mean column)."""

    score: float
    ci_low: float | None
    ci_high: float | None
    n_seeds: int
    tied: bool | None = None
    """Best, or not significantly worse than the best (None: not tested)."""
    rank_low: int | None = None
    rank_high: int | None = None
    sd: float = 0.0
    n_test: int = 0
    usd_per_answer: float | None = None
    sub_scores: dict = dataclasses.field(default_factory=dict)
    seed_scores: dict[int, float] = dataclasses.field(default_factory=dict)
    """Seed -> stored score (for the mean column's seed term)."""
    note: str = ""
    """Why the cell has no tie flag, or what its mean rests on."""


@dataclasses.dataclass
class Column:
    """One task (and protocol) at one n_train: a cell per row."""

    task: str
    protocol: str
    label: str
    n_train: int
    metric: str
    cells: dict[tuple[str, str], Cell]
    units: str = "examples"
    """What the bootstrap resampled: examples, groups (clusters), or examples within class."""
    note: str = ""
    reps: dict[tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    """Row -> (B,) replicates of its seed-averaged score (only rows with tie flags)."""


@dataclasses.dataclass
class Board:
    columns: list[Column]
    rows: list[tuple[str, str]]
    """(model, method label), sorted by mean (or the only column), best first."""
    mean: dict[tuple[str, str], Cell]
    n_resamples: int
    seed: int
    alpha: float
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def column_seed(seed: int, task: str, protocol: str, n_train: int) -> int:
    """The bootstrap seed of one column: the same for every model, different between columns."""
    return (seed * 1_000_003 + zlib.crc32(f"{task}|{protocol}|{n_train}".encode())) % 2**32


def method_label(r: dict) -> str:
    return r["method"] if r["method"] != "mllm" else f"mllm/{r.get('prompting') or 'single'}"


def base_protocol(protocol: str) -> str:
    return protocol.split("|", 1)[0]


#################
# Predictions   #
#################


_BY_ID = "predictions INDEXED BY sqlite_autoindex_predictions_1 WHERE experiment_id = ?"
"""One experiment's predictions through the primary-key index: always in example-id order, so the
strings of separate queries (scores, labels, groups) line up; SQLite refuses the query rather than
scan another way."""


def fetch_ids(conn: sqlite3.Connection, exp_id: int) -> str | None:
    """One experiment's example ids, in id order, joined by \\x1f (None if it stored no predictions)."""
    row = conn.execute(f"SELECT count(*), group_concat(example_id, char(31)) FROM {_BY_ID}", (exp_id,)).fetchone()
    return row[1] if row[0] else None


def fetch_scores(conn: sqlite3.Connection, exp_id: int) -> tuple[str, np.ndarray] | None:
    """One experiment's example ids (joined by \\x1f, in id order) and per-example scores; None if none stored.

    SQLite builds both strings, so no Python object is made per prediction.
    """
    row = conn.execute(
        f"SELECT count(*), group_concat(example_id, char(31)), group_concat(score) FROM {_BY_ID}",
        (exp_id,),
    ).fetchone()
    if not row[0]:
        return None
    return row[1], np.array(row[2].split(","), dtype=np.float64)


def fetch_field(conn: sqlite3.Connection, exp_id: int, key: str) -> list:
    """One field of every prediction's info (`label`, `pred`, `group`), in id order; None where absent.

    SQLite extracts the field as JSON text (`->`), so Python parses one flat array, not a dict per prediction.
    """
    row = conn.execute(
        f"SELECT group_concat(ifnull(info -> '$.{key}', 'null'), ',') FROM {_BY_ID}",
        (exp_id,),
    ).fetchone()
    return json.loads("[" + (row[0] or "") + "]")


def fetch_infos(conn: sqlite3.Connection, exp_id: int) -> list[dict]:
    """One experiment's per-prediction info (true and predicted label, group, sub-task...), in id order."""
    row = conn.execute(
        f"SELECT group_concat(info, char(30)) FROM {_BY_ID}",
        (exp_id,),
    ).fetchone()
    # JSON text never holds a raw control character, so \x1e cannot occur inside an info.
    return json.loads("[" + (row[0] or "").replace("\x1e", ",") + "]")


@dataclasses.dataclass
class Stored:
    """One experiment's predictions as the paired tests need them, in example-id order."""

    digest: str
    """`store.ids_digest` of its example ids: equal digests, the same test examples."""
    scores: np.ndarray
    fields: dict[str, np.ndarray | list]
    """Info field (label, pred, group) -> one value per prediction (an int64 array where the values are integers)."""


def fetch_stored(conn: sqlite3.Connection, exp_ids: Sequence[int], fields: Sequence[str]) -> dict[int, Stored | None]:
    """The predictions of several experiments: their `prediction_arrays` rows in one query where stored, else
    (a database from before them) their prediction rows. None for an experiment without predictions."""
    from biobench.store import PACKED_FIELDS, ids_digest, unpack_values

    if not set(fields) <= set(PACKED_FIELDS):
        raise ValueError(f"fields {list(fields)}: the packed arrays keep only {', '.join(PACKED_FIELDS)}.")
    out: dict[int, Stored | None] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'prediction_arrays'").fetchone():
        cols = ", ".join({"label": "label", "pred": "pred", "group": "grp"}[f] for f in fields)
        ids = list(dict.fromkeys(exp_ids))
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            query = (
                f"SELECT experiment_id, n, ids_digest, scores{', ' + cols if cols else ''} FROM prediction_arrays "
                f"WHERE experiment_id IN ({', '.join('?' * len(part))})"
            )
            for exp_id, n, digest, blob, *values in conn.execute(query, part):
                scores = np.frombuffer(blob, dtype="<f8").astype(np.float64)
                out[exp_id] = Stored(digest, scores, {f: unpack_values(v, n) for f, v in zip(fields, values)}) if n else None
    for exp_id in exp_ids:
        if exp_id in out:
            continue
        got = fetch_scores(conn, exp_id)
        out[exp_id] = None if got is None else Stored(ids_digest(got[0]), got[1], {f: fetch_field(conn, exp_id, f) for f in fields})
    return out


def _spec(task: str):
    """The registered task's spec, or None (a task of a plugin that is not loaded, a generated store)."""
    try:
        from biobench.tasks import get_task

        return get_task(task)
    except Exception:
        return None


#####################
# Bootstrap weights #
#####################


def weights(n_units: int, n_resamples: int, seed: int, *, strata: np.ndarray | None = None) -> Float[np.ndarray, "b1 u"]:
    """(1 + B, units) draw counts (float32, exact): row 0 is all ones (the point estimate), row r the counts of replicate r.

    Replicate r counts how often each unit is among the r-th row of `stats.resample_indices`
    (U draws with replacement; with `strata`, within each stratum), on the same seed.
    """
    out = np.empty((n_resamples + 1, n_units), dtype=np.float32)
    out[0] = 1.0
    row = 1
    step = max(1, 2**16 // n_units)  # rows counted at once: the keys and counts stay in cache
    offsets = (np.arange(step) * n_units)[:, None]
    for idx in stats.resample_indices(n_units, n_resamples=n_resamples, seed=seed, strata=strata):
        for lo in range(0, idx.shape[0], step):
            part = idx[lo : lo + step]
            b = part.shape[0]
            out[row : row + b] = np.bincount((part + offsets[:b]).ravel(), minlength=b * n_units).reshape(b, n_units)
            row += b
    return out


_MAX_CELLS = 2**25  # elements of one product's result (float32: 128 MB)
_DENSE_SHARE = 0.05
"""Above this share of ones, an indicator matrix is multiplied dense (BLAS); below, sparse."""


def _weighted_sums(w: np.ndarray, cols: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """w @ M for the 0/1 matrix M (n x width) with ones at (rows, cols), in float64.

    Counts times 0/1 are small integers, exact in float32, so the product runs in float32:
    dense BLAS when M is dense enough and fits, else dense-times-sparse (CSC).
    """
    n = w.shape[1]
    w32 = w.astype(np.float32, copy=False)
    if len(rows) > _DENSE_SHARE * n * width and n * width * 4 <= 256 * 2**20:
        m = np.zeros((n, width), dtype=np.float32)
        m[rows, cols] = 1.0
        return (w32 @ m).astype(np.float64)
    import scipy.sparse as sp

    m = sp.csc_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, width))
    return np.asarray(w32 @ m, dtype=np.float64)


_PER_CLASS_GEMM = 64
"""Up to this many classes, per-class hits come from one small dense product per class (BLAS); above, sparse."""


def _by_class_products(wc: np.ndarray, bounds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(c, b1, e) float32: [c, b, e] = sum over the examples i of class c of wc[b, i] x[e, i] (examples sorted by class, `bounds`)."""
    c_n = len(bounds) - 1
    out = np.empty((c_n, wc.shape[0], x.shape[0]), dtype=np.float32)
    for c in range(c_n):
        lo, hi = bounds[c], bounds[c + 1]
        np.matmul(wc[:, lo:hi], x[:, lo:hi].T, out=out[c])
    return out


def _f1(tp: np.ndarray, fp: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Mean over axis 0 (classes or traits) of 2 tp / (true + tp + fp), 0 where nothing is true or predicted."""
    c_n, b1, e_n = tp.shape
    out = np.empty((b1, e_n))
    step = max(1, 2**16 // (c_n * e_n))  # replicates at once: the temporaries stay in cache
    for lo in range(0, b1, step):
        t = tp[:, lo : lo + step].astype(np.float64)
        denom = true[:, lo : lo + step] + t + fp[:, lo : lo + step]
        out[lo : lo + step] = np.divide(2 * t, denom, out=np.zeros(denom.shape), where=denom > 0).mean(axis=0)
    return out


def _mean_recall(tp: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Mean over axis 0 (classes) of tp / true over the classes present (true > 0) in each replicate."""
    c_n, b1, e_n = tp.shape
    out = np.empty((b1, e_n))
    step = max(1, 2**16 // (c_n * e_n))  # replicates at once: the temporaries stay in cache
    for lo in range(0, b1, step):
        t = tp[:, lo : lo + step].astype(np.float64)
        present = np.broadcast_to(true[:, lo : lo + step] > 0, t.shape)
        recall = np.divide(t, np.broadcast_to(true[:, lo : lo + step], t.shape), out=np.zeros(t.shape), where=present)
        out[lo : lo + step] = recall.sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    return out


def replicate_metric(metric: str, w: np.ndarray, y_true: np.ndarray, y_preds: Sequence[np.ndarray]) -> Float[np.ndarray, "e b1"]:
    """The label metric `metric` of each prediction vector under every weight row (row 0 = the point estimate).

    Per-class (or per-trait) counts of all experiments come from products of the weights
    with 0/1 indicator matrices (experiments in chunks that bound memory), so no loop runs
    per replicate or per example: true positives from the examples of each class (or with
    each trait) only, false positives from the others (sparse where they are few), and
    predictions per class = true + false positives. Counts times 0/1 are integers, exact
    in float32, so the products run in float32. Arrays are laid out (class, replicate, experiment).
    """
    b1, n = w.shape
    w32 = w.astype(np.float32, copy=False)
    if metric in MULTILABEL:
        t = np.asarray(y_true, dtype=bool)
        k = t.shape[1]
        true = (w32 @ t.astype(np.float32)).astype(np.float64).T[:, :, None]  # (k, b1, 1)
        chunk = max(1, _MAX_CELLS // (b1 * 2 * k))
        pos = [np.flatnonzero(t[:, j]) for j in range(k)]
        neg = [np.flatnonzero(~t[:, j]) for j in range(k)]
        w_pos, w_neg = [w32[:, i] for i in pos], [w32[:, i] for i in neg]
        out = []
        for lo in range(0, len(y_preds), chunk):
            ps = np.stack([np.asarray(p, dtype=bool) for p in y_preds[lo : lo + chunk]])  # (e, n, k)
            tp = np.empty((k, b1, len(ps)), dtype=np.float32)
            fp = np.empty((k, b1, len(ps)), dtype=np.float32)
            for j in range(k):
                np.matmul(w_pos[j], ps[:, pos[j], j].T.astype(np.float32), out=tp[j])
                np.matmul(w_neg[j], ps[:, neg[j], j].T.astype(np.float32), out=fp[j])
            out.append(_f1(tp, fp, true).T)
        return np.concatenate(out)
    labels = np.unique(y_true)
    c_n = len(labels)
    t = np.searchsorted(labels, y_true)
    true = _weighted_sums(w, t, np.arange(n), c_n).T[:, :, None]  # (c, b1, 1)
    dense = c_n <= _PER_CLASS_GEMM
    if dense:
        order = np.argsort(t, kind="stable")
        bounds = np.searchsorted(t[order], np.arange(c_n + 1))
        wc = np.ascontiguousarray(w32[:, order])
    chunk = max(1, _MAX_CELLS // (b1 * 2 * c_n))
    out = []
    for lo in range(0, len(y_preds), chunk):
        ps = list(y_preds[lo : lo + chunk])
        e_n = len(ps)
        codes = []
        for p in ps:
            pc = np.searchsorted(labels, p)
            codes.append(np.where((pc < c_n) & (labels[np.minimum(pc, c_n - 1)] == p), pc, -1))
        pcs = np.stack(codes)  # (e, n), -1: a prediction that is no true class
        hit = pcs == t[None, :]
        if dense:
            tp = _by_class_products(wc, bounds, hit[:, order].astype(np.float32))
        else:
            e_idx, i_idx = np.nonzero(hit)
            tp = _weighted_sums(w, e_idx * c_n + t[i_idx], i_idx, e_n * c_n).reshape(b1, e_n, c_n).transpose(2, 0, 1)
        if metric == "macro_f1":  # also the false positives per class
            e_idx, i_idx = np.nonzero(~hit & (pcs >= 0))
            fp = _weighted_sums(w, e_idx * c_n + pcs[e_idx, i_idx], i_idx, e_n * c_n).reshape(b1, e_n, c_n).transpose(2, 0, 1)
            values = _f1(tp, fp, true)
        else:
            values = _mean_recall(tp, true)
        out.append(values.T)
    return np.concatenate(out)


def replicate_means(w: np.ndarray, codes: np.ndarray, n_units: int, scores: Sequence[np.ndarray]) -> Float[np.ndarray, "e b1"]:
    """Each score vector's weighted mean under every weight row, its examples in units `codes` (0..n_units-1).

    The per-unit sums of 0/1 scores (or any integers) are exact in float32, and so is their
    product with the counts: the product then runs in float32 (BLAS), otherwise in float64.
    """
    sizes = np.bincount(codes, minlength=n_units).astype(np.float64)
    sums = np.stack([np.bincount(codes, weights=s, minlength=n_units) for s in scores])
    bound = max(float(np.abs(sums).sum(axis=1).max(initial=0)), float(sizes.sum())) * float(w.max(initial=0))
    exact = bool(np.all(sums == np.round(sums))) and bound < 2**24
    if exact:
        num = (w.astype(np.float32, copy=False) @ sums.T.astype(np.float32)).astype(np.float64)
        den = (w.astype(np.float32, copy=False) @ sizes.astype(np.float32)).astype(np.float64)
    else:
        w64 = w.astype(np.float64)
        num, den = w64 @ sums.T, w64 @ sizes
    return (num / den[:, None]).T


def _codes(lists: Sequence[Sequence]) -> list[np.ndarray]:
    """Integer codes of the values of several lists, one code per distinct value over all of them (in sorted order)."""
    arrays = [np.asarray(v) for v in lists]
    if all(a.dtype.kind in "iub" for a in arrays):
        flat = np.concatenate(arrays)
    else:  # strings, None for a failed answer, lists: compared as text
        flat = np.array([json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else str(v) for x in lists for v in x])
    _, codes = np.unique(flat, return_inverse=True)
    out, pos = [], 0
    for a in arrays:
        out.append(codes[pos : pos + len(a)])
        pos += len(a)
    return out


######################
# Tests and ranks    #
######################


def paired_tests(est: Float[np.ndarray, " m"], reps: Float[np.ndarray, "b m"], alpha: float = ALPHA) -> np.ndarray:
    """(m, m) boolean: [j, k] = j is significantly better than k (one-sided paired bootstrap, Holm over j's m - 1 tests).

    All pairs at once (rows of j in blocks that bound memory); Holm row by row as `stats.holm`.
    """
    m = len(est)
    better = np.zeros((m, m), dtype=bool)
    if m < 2:
        return better
    b = reps.shape[0]
    off = ~np.eye(m, dtype=bool)
    block = max(1, 2**17 // (b * m))  # rows of j at once: the (b, block, m) temporaries stay in cache
    for lo in range(0, m, block):
        hi = min(m, lo + block)
        d = est[lo:hi, None] - est[None, :]  # [j, k]
        dstar = reps[:, lo:hi, None] - reps[:, None, :]
        count = ((dstar - d[None]) >= d[None] - 1e-12).sum(axis=0)
        p = np.where(d > 1e-12, np.minimum((1 + count) / (b + 1), 1.0), 1.0)
        p = p[off[lo:hi]].reshape(hi - lo, m - 1)
        order = np.argsort(p, axis=1, kind="stable")
        scaled = (m - 1 - np.arange(m - 1))[None, :] * np.take_along_axis(p, order, axis=1)
        adjusted = np.empty_like(p)
        np.put_along_axis(adjusted, order, np.minimum(np.maximum.accumulate(scaled, axis=1), 1.0), axis=1)
        better[lo:hi][off[lo:hi]] = (adjusted <= alpha).ravel()
    return better


def ranks_and_ties(est: np.ndarray, better: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tied with the best, best rank, worst rank) per model."""
    m = len(est)
    best = int(np.argmax(est))
    tied = ~better[best]
    tied[best] = True
    low = 1 + better.sum(axis=0)
    high = m - better.sum(axis=1)
    return tied, low, high


def interval(estimate: float, reps: np.ndarray, seed_scores: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Percentile interval of the replicates, its half-widths combined with the seed spread in quadrature."""
    low, high = stats.percentile_interval(reps, estimate)
    from biobench.report import stdev

    seed_term = z * stdev(seed_scores) / len(seed_scores) ** 0.5
    if seed_term == 0:
        return low, high
    return estimate - math.hypot(estimate - low, seed_term), estimate + math.hypot(high - estimate, seed_term)


##################
# The board      #
##################


def leaderboard_n_train(values: Sequence[int]) -> int:
    """The n_train a column shows by default: all (-1) where present, else the largest."""
    return -1 if -1 in values else max(values)


def build(
    rows: Sequence[dict],
    db: Path | str | None = None,
    *,
    labels: dict[str, str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    alpha: float = ALPHA,
) -> Board:
    """The leaderboard of `rows` (experiment rows); paired tests read the predictions in `db` (none without it)."""
    labels = labels or {}
    by_col: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_col.setdefault((r["task"], base_protocol(r["protocol"])), []).append(r)
    clock = {"read predictions (threads)": 0.0, "bootstrap and tests (threads)": 0.0}
    columns, groups = [], []
    for (task, proto), rs in sorted(by_col.items()):
        n_train = leaderboard_n_train([r["n_train"] for r in rs])
        col, g = _column(task, proto, labels.get(proto, proto), n_train, [r for r in rs if r["n_train"] == n_train])
        columns.append(col)
        groups.append(g)
    if db is not None and rows and "id" in rows[0]:
        uri = f"{Path(db).resolve().as_uri()}?mode=ro"
        local = threading.local()
        lock = threading.Lock()
        conns: list[sqlite3.Connection] = []

        def work(i: int) -> None:
            # Two threads, each reading and testing whole columns, one connection each: SQLite and the BLAS
            # products release the GIL, so both cores work (BLAS itself on one thread each, below).
            if not hasattr(local, "conn"):
                local.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                with lock:
                    conns.append(local.conn)
            start = time.perf_counter()
            try:
                data = _read(columns[i], groups[i], local.conn)
            except sqlite3.Error as err:  # e.g. a predictions table without its primary-key index
                columns[i].note = f"cannot read the stored predictions ({err}): no paired tests"
                data = None
            middle = time.perf_counter()
            if data is not None:
                _test(columns[i], groups[i], data, n_resamples, seed, alpha)
            with lock:
                clock["read predictions (threads)"] += middle - start
                clock["bootstrap and tests (threads)"] += time.perf_counter() - middle

        try:
            with _one_blas_thread(), concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(work, range(len(columns))))
        finally:
            for conn in conns:
                conn.close()
    else:
        for col in columns:
            col.note = "no predictions read: no paired tests"
    start = time.perf_counter()
    all_rows = sorted({k for c in columns for k in c.cells})
    mean = _mean(columns, all_rows, alpha) if len(columns) > 1 else {}
    clock["mean column"] = time.perf_counter() - start

    def order(k):
        if mean:
            return (k not in mean, -mean[k].score if k in mean else 0.0, k)
        c = columns[0].cells.get(k) if columns else None
        return (c is None, -c.score if c else 0.0, k)

    return Board(columns, sorted(all_rows, key=order), mean, n_resamples, seed, alpha, clock)


def _one_blas_thread():
    """BLAS on one thread while the two column threads run (two threads of BLAS each would oversubscribe the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _column(task, proto, label, n_train, rs) -> tuple[Column, dict]:
    from biobench.report import across_seed_interval, stdev

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rs:
        groups.setdefault((r["model"], method_label(r)), []).append(r)
    cells = {}
    for key, g in groups.items():
        scores = [r["score"] for r in g]
        costs = [r.get("cost_usd") for r in g]
        cells[key] = Cell(
            score=statistics.fmean(scores),
            ci_low=None,
            ci_high=None,
            n_seeds=len(g),
            sd=stdev(scores),
            n_test=g[0]["n_test"],
            usd_per_answer=None if None in costs else sum(costs) / max(1, sum(r["n_test"] for r in g)),
            sub_scores=_mean_sub_scores([r.get("sub_scores") for r in g]),
            seed_scores={r["seed"]: r["score"] for r in g},
        )
        cells[key].ci_low, cells[key].ci_high = across_seed_interval(g)
    metric = rs[0]["metric"]
    return Column(task, proto, label, n_train, metric, cells), groups


def _mean_sub_scores(subs: Sequence) -> dict:
    """Seed average of the numeric leaves of the sub-scores (level -> name -> {field: value})."""
    parsed = []
    for s in subs:
        try:
            parsed.append(json.loads(s) if isinstance(s, str) else (s or {}))
        except ValueError:
            continue
    out: dict = {}
    for s in parsed:
        for level, names in s.items():
            if not isinstance(names, dict):
                continue
            for name, fields in names.items():
                if isinstance(fields, dict):
                    for f, v in fields.items():
                        if isinstance(v, int | float) and not isinstance(v, bool):
                            out.setdefault(level, {}).setdefault(name, {}).setdefault(f, []).append(float(v))
                elif isinstance(fields, int | float):
                    out.setdefault(level, {}).setdefault(name, {}).setdefault("value", []).append(float(fields))
    return {lv: {n: {f: statistics.fmean(v) for f, v in fs.items()} for n, fs in ns.items()} for lv, ns in out.items()}


def _read(col: Column, groups: dict, conn) -> dict | None:
    """What the paired tests of a column need from the store (None: no tests; the reason is in the notes)."""
    metric = col.metric
    spec = _spec(col.task)
    headline = getattr(spec, "headline", None)
    resample = getattr(getattr(spec, "metric", None), "resample", None)
    label_metric = metric in MACRO or metric in MULTILABEL
    replicates = getattr(getattr(spec, "metric", None), "replicates", None)
    value = None if label_metric or replicates is not None else getattr(getattr(spec, "metric", None), "value", None)
    clustered = not label_metric and replicates is None and value is None and resample in (None, "clustered")
    cluster = getattr(getattr(spec, "metric", None), "cluster", "group")
    if replicates is not None:
        fields: tuple[str, ...] = ("label", "pred", "group")
    elif label_metric or value is not None:
        fields = ("label", "pred")
    else:
        fields = ("group",) if clustered and cluster == "group" else ()
    stored = fetch_stored(conn, [r["id"] for g in groups.values() for r in g], fields)
    ref_key = next((k for k in sorted(groups) if all(stored[r["id"]] is not None for r in groups[k])), None)
    if ref_key is None:
        col.note = "no stored predictions: no paired tests"
        return None
    ref_id = groups[ref_key][0]["id"]
    ref = stored[ref_id]
    rows_ok = []
    for key in sorted(groups):
        rs = groups[key]
        if any(stored[r["id"]] is None for r in rs):
            col.cells[key].note = "predictions not stored"
        elif any(stored[r["id"]].digest != ref.digest for r in rs):
            col.cells[key].note = "scored on other test examples than the rest of the column"
        else:
            rows_ok.append(key)
    exps = [r for k in rows_ok for r in groups[k]]
    return {
        "ids": fetch_ids(conn, ref_id).split("\x1f"),
        "ref_info": fetch_infos(conn, ref_id) if headline is not None else None,
        "truth": ref.fields.get("label"),
        # The cluster of each example: its group, or the info field the task's metric names (NeWT: its task).
        "grp": (ref.fields.get("group") if cluster == "group" else fetch_field(conn, ref_id, cluster)) if clustered else None,
        "scores": {r["id"]: stored[r["id"]].scores for r in exps},
        "pred_of": {r["id"]: stored[r["id"]].fields["pred"] for r in exps} if label_metric or value is not None else {},
        "fields_of": {r["id"]: stored[r["id"]].fields for r in exps} if replicates is not None else {},
        "replicates": replicates,
        "value": value,
        "stratified": resample == "stratified",
        "rows_ok": rows_ok,
        "exps": exps,
        "label_metric": label_metric,
        "clustered": clustered,
        "headline": headline,
    }


def _test(col: Column, groups: dict, data: dict, n_resamples: int, seed: int, alpha: float) -> None:
    """The column's paired bootstrap: one weight matrix for every model, then tests, ranks and intervals."""
    ids, ref_info, headline = data["ids"], data["ref_info"], data["headline"]
    keep = np.ones(len(ids), dtype=bool)
    if headline is not None:
        keep = np.array([headline in (i or {}).values() for i in ref_info])
    sel = np.flatnonzero(keep)
    n = len(sel)
    col_seed = column_seed(seed, col.task, col.protocol, col.n_train)

    def pick(v):
        if n == len(ids):
            return v
        return v[sel] if isinstance(v, np.ndarray) else [v[i] for i in sel]

    try:
        reps_e = _replicates(col, data, n, sel, pick, n_resamples, col_seed)
    except (TypeError, ValueError, KeyError) as err:  # e.g. a failed answer (None) where the metric wants a label
        col.note = f"{col.metric} cannot be recomputed from the stored predictions ({err}): no paired tests"
        return
    _conclude(col, groups, data["rows_ok"], reps_e, alpha)


def _replicates(col: Column, data: dict, n: int, sel: np.ndarray, pick, n_resamples: int, col_seed: int) -> np.ndarray:
    """(experiments, 1 + B): each experiment's metric under every weight row (row 0 = the point estimate)."""
    metric, label_metric, clustered = col.metric, data["label_metric"], data["clustered"]
    ids, truth, grp, pred_of, scores, exps = (data[k] for k in ("ids", "truth", "grp", "pred_of", "scores", "exps"))
    if data["replicates"] is not None:  # the task's own recomputation (a challenge score)
        rep = data["replicates"]
        ref_fields = {f: pick(v) for f, v in data["fields_of"][exps[0]["id"]].items()}
        strata = None if rep.strata is None else np.asarray(rep.strata(ref_fields))
        w = weights(n, n_resamples, col_seed, strata=None if strata is None else _codes([strata])[0])
        reps_e = np.stack([
            np.asarray(rep.value(scores[r["id"]][sel], {f: pick(v) for f, v in data["fields_of"][r["id"]].items()}, w), dtype=np.float64)
            for r in exps
        ])  # fmt: skip
        col.units = "examples" if strata is None else "examples within strata"
    elif data["value"] is not None:  # value(labels, predictions, idx): the metric's own bootstrap form
        y = np.asarray(pick(truth))
        strata = _codes([y])[0] if data["stratified"] else None
        w = weights(n, n_resamples, col_seed, strata=strata)
        counts = np.rint(w[1:]).astype(np.int64)
        idx = np.repeat(np.tile(np.arange(n), counts.shape[0]), counts.ravel()).reshape(counts.shape[0], n)
        reps_e = np.stack([
            np.concatenate([[data["value"](y, p, None)], np.asarray(data["value"](y, p, idx), dtype=np.float64)])
            for p in (np.asarray(pick(pred_of[r["id"]])) for r in exps)
        ])  # fmt: skip
        col.units = "examples within class" if strata is not None else "examples"
    elif label_metric:
        truth = pick(truth)
        if metric in MACRO:
            # One code per label value (ints, strings, None for a failed answer) over truth and every prediction.
            codes = _codes([truth] + [pick(pred_of[r["id"]]) for r in exps])
            y_codes, vecs = codes[0], codes[1:]
            w = weights(n, n_resamples, col_seed, strata=y_codes)
            reps_e = replicate_metric(metric, w, y_codes, vecs)
            col.units = "examples within class"
        else:
            y = np.asarray(truth, dtype=np.int64)
            w = weights(n, n_resamples, col_seed)
            vecs = [np.asarray(pred_of[r["id"]], dtype=np.int64)[sel] for r in exps]
            reps_e = replicate_metric(metric, w, y, vecs)
    else:
        units_src = None
        if clustered:
            grp = pick(grp)
            # One cluster only (a single NeWT task selected) leaves nothing to resample between: then examples.
            if (isinstance(grp, np.ndarray) or all(v is not None for v in grp)) and len({str(v) for v in grp}) > 1:
                units_src, col.units = grp, "groups"
        if units_src is None and n and _REPEAT.match(ids[sel[0]]):
            units_src, col.units = [_REPEAT.sub("", ids[i]) for i in sel], "test examples (repeats pooled)"
        if units_src is None:
            codes, g = np.arange(n), n
        else:
            codes = _codes([units_src])[0]
            g = int(codes.max()) + 1
        w = weights(g, n_resamples, col_seed)
        reps_e = replicate_means(w, codes, g, [scores[r["id"]][sel] for r in exps])
    return reps_e


def _conclude(col: Column, groups: dict, rows_ok: list, reps_e: np.ndarray, alpha: float) -> None:
    """Check each model's recomputed score against the stored one, then test, rank and set intervals."""
    pos = 0
    est, reps, keys = [], [], []
    for key in rows_ok:
        k = len(groups[key])
        block = reps_e[pos : pos + k]
        pos += k
        recomputed = block[:, 0]
        stored = np.array([r["score"] for r in groups[key]])
        if not np.all(np.isfinite(block)):
            col.cells[key].note = f"{col.metric} is undefined on some resample of its predictions"
            continue
        if not np.allclose(recomputed, stored, atol=1e-6, rtol=0):
            col.cells[key].note = f"stored {col.metric} not reproduced from its predictions ({stored[0]:.4f} vs {recomputed[0]:.4f})"
            continue
        keys.append(key)
        est.append(block[:, 0].mean())
        reps.append(block[:, 1:].mean(axis=0))
    if not keys:
        col.note = col.note or "no model's score could be reproduced from its predictions: no paired tests"
        return
    est_a, reps_a = np.asarray(est), np.stack(reps, axis=1)
    better = paired_tests(est_a, reps_a, alpha)
    tied, low, high = ranks_and_ties(est_a, better)
    for i, key in enumerate(keys):
        c = col.cells[key]
        c.tied, c.rank_low, c.rank_high = bool(tied[i]), int(low[i]), int(high[i])
        c.ci_low, c.ci_high = interval(c.score, reps_a[:, i], [r["score"] for r in groups[key]])
        col.reps[key] = reps_a[:, i]


def _mean(columns: Sequence[Column], keys: Sequence[tuple[str, str]], alpha: float) -> dict[tuple[str, str], Cell]:
    out = {}
    t = len(columns)
    tested = []
    for key in keys:
        cells = [c.cells.get(key) for c in columns]
        have = [c for c in cells if c is not None]
        if len(have) < t:
            continue
        cell = Cell(
            score=statistics.fmean(c.score for c in have),
            ci_low=None,
            ci_high=None,
            n_seeds=min(c.n_seeds for c in have),
            n_test=sum(c.n_test for c in have),
        )
        out[key] = cell
        if all(key in c.reps for c in columns):
            tested.append(key)
        else:
            cell.note = "some task has no paired replicates: no interval or tie flag"
    if tested:
        reps = np.stack([np.mean([c.reps[k] for c in columns], axis=0) for k in tested], axis=1)
        est = np.array([out[k].score for k in tested])
        better = paired_tests(est, reps, alpha)
        tied, low, high = ranks_and_ties(est, better)
        for i, k in enumerate(tested):
            cell = out[k]
            cell.tied, cell.rank_low, cell.rank_high = bool(tied[i]), int(low[i]), int(high[i])
            common = set.intersection(*(set(c.cells[k].seed_scores) for c in columns))
            per_seed = [statistics.fmean(c.cells[k].seed_scores[s] for c in columns) for s in sorted(common)]
            cell.ci_low, cell.ci_high = interval(cell.score, reps[:, i], per_seed)
    return out
