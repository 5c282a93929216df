"""Scoring program of the HDR butterfly hybrid-detection challenge (Imageomics, CodaBench 2024-25).

https://github.com/Imageomics/HDR-anomaly-challenge

Inputs. A reference CSV with (at least) the columns `filename`, `hybrid_stat` (1 =
hybrid, 0 = not) and `ssp_indicator` (`major` | `minor` | `mimic`), and a predictions
file of `filename,score` lines, where a higher score means "more likely a hybrid".

The metric. Species A is `major` + `minor` (the species whose signal hybrids are in the
training data); `mimic` is its mimetic species. For each of A and mimic the threshold is
the smallest distinct score at which at least 95% of that group's non-hybrids score <=
it, and a hybrid is found when its score is strictly greater. The leaderboard reports

- `A_score_major_recall`, `A_score_minor_recall`: A's threshold applied to A's major
  (signal) and minor (non-signal) hybrids,
- `mimic_recall`: mimic hybrids found at the mimic threshold,
- `A_PRC_AUC`, `A_PRC_AUC_major`, `A_PRC_AUC_minor`, `mimic_PRC_AUC`: average precision
  (scikit-learn's step-wise definition, ties as one step),
- `challenge_score`: the harmonic mean of the three recalls (0 if any is 0).

A detailed JSON adds, per group, the threshold, the non-hybrid recall it achieves,
hybrid precision, F1, accuracy (predicting hybrid when score > threshold) and ROC AUC,
in the layout of the challenge's own test cases (`A_scores`, `mimic_scores`).

Every metric is computed from per-example integer weights, so one vectorised pass
evaluates a whole batch of bootstrap resamples (weights = resample counts): scores are
sorted once per group and every threshold, recall and average precision comes from
cumulative sums, never a loop over examples or thresholds.

This module imports only the standard library and numpy, so the CodaBench bundle ships
it unchanged as `scoring_program/score.py` (`python3 score.py INPUT_DIR OUTPUT_DIR`).

Relation to the official scoring program. Its final version, like this one, thresholds on
distinct scores (a tie is never split) and refuses a submission with missing predictions;
one difference remains: it rounds `threshold_recall` to 4 decimals in its detailed output,
which we report at full precision. Its June-2024 version placed the threshold between
sorted positions (tied scores could fall on both sides of it) and inner-joined
predictions to the reference (a submission missing images was scored on a subset), and
that season's ingestion rounded scores to 4 decimals, creating ties; ours writes them at
full precision.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jaxtyping import Float, Int

try:
    from biobench.errors import DataError
except ImportError:  # copied alone into a CodaBench bundle, where biobench is not installed

    class DataError(ValueError):  # type: ignore[no-redef]
        """Reference or prediction input that cannot be scored."""


logger = logging.getLogger(__name__)

GROUPS = ("major", "minor", "mimic")
MAJOR, MINOR, MIMIC = 0, 1, 2
TARGET_PERCENT = 95
"""Non-hybrid recall (in percent) the threshold must reach; integer so the test is exact."""
REFERENCE_COLUMNS = ("filename", "hybrid_stat", "ssp_indicator")
LEADERBOARD_KEYS = (
    "challenge_score",
    "A_score_major_recall",
    "A_score_minor_recall",
    "mimic_recall",
    "A_PRC_AUC",
    "A_PRC_AUC_major",
    "A_PRC_AUC_minor",
    "mimic_PRC_AUC",
)
RECALL_KEYS = ("A_score_major_recall", "A_score_minor_recall", "mimic_recall")
_SHOWN = 5  # names listed in an error message


@dataclass(frozen=True)
class Reference:
    """A reference file: one row per test image."""

    path: str
    filenames: tuple[str, ...]
    labels: np.ndarray
    """int8, 1 = hybrid."""
    groups: np.ndarray
    """int8 index into GROUPS."""


#########
# Input #
#########


def read_reference(path: str | os.PathLike) -> Reference:
    """Read and validate a reference CSV (filename, hybrid_stat 0/1, ssp_indicator major|minor|mimic)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"Reference file not found: {path}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read reference file {path}: {err}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; a reference CSV needs {', '.join(REFERENCE_COLUMNS)}.")
    names: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    first_line: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        name = row["filename"] or ""
        if not name:
            raise DataError(f"{path}:{line}: empty filename.")
        label = (row["hybrid_stat"] or "").strip()
        if label not in ("0", "1", "0.0", "1.0"):
            raise DataError(f"{path}:{line}: hybrid_stat of {name!r} must be 0 or 1, got {label!r}.")
        group = (row["ssp_indicator"] or "").strip().lower()
        if group not in GROUPS:
            raise DataError(f"{path}:{line}: ssp_indicator of {name!r} must be major, minor or mimic, got {group!r}.")
        if name in first_line:
            raise DataError(f"{path}:{line}: filename {name!r} also on line {first_line[name]}; filenames must be unique.")
        first_line[name] = line
        names.append(name)
        labels.append(int(float(label)))
        groups.append(GROUPS.index(group))
    ref = Reference(str(path), tuple(names), np.array(labels, dtype=np.int8), np.array(groups, dtype=np.int8))
    check_groups(ref.labels, ref.groups, where=str(path))
    return ref


def check_groups(labels: Int[np.ndarray, " n"], groups: Int[np.ndarray, " n"], *, where: str) -> None:
    """Every group needs hybrids (for recall and AP) and non-hybrids (for its threshold)."""
    for g, name in enumerate(GROUPS):
        in_group = groups == g
        n_hybrid = int((labels[in_group] == 1).sum())
        n_other = int(in_group.sum()) - n_hybrid
        if n_hybrid == 0 or n_other == 0:
            raise DataError(
                f"{where}: group '{name}' has {n_hybrid} hybrid(s) and {n_other} non-hybrid(s); "
                f"every group ({', '.join(GROUPS)}) needs at least one of each to be scored."
            )


def read_predictions(path: str | os.PathLike) -> dict[str, float]:
    """Read `filename,score` lines (blank lines and a `filename,score` header are skipped).

    The score is what follows the last comma, so file names may contain commas.
    """
    path = Path(path)
    out: dict[str, float] = {}
    first_line: dict[str, int] = {}
    try:
        fd = open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"Predictions file not found: {path}.") from None
    with fd:
        for line_no, raw in enumerate(fd, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            name, sep, value = line.rpartition(",")
            if line_no == 1 and value.strip().lower() == "score":
                continue  # a header
            if not sep or not name:
                raise DataError(f"{path}:{line_no}: expected 'filename,score', got {line!r}.")
            try:
                score = float(value)
            except ValueError:
                raise DataError(f"{path}:{line_no}: cannot parse the score {value.strip()!r} of {name!r} as a number.") from None
            if not math.isfinite(score):
                raise DataError(f"{path}:{line_no}: the score of {name!r} is {value.strip()}; scores must be finite numbers.")
            if name in first_line:
                raise DataError(
                    f"{path}:{line_no}: a second prediction for {name!r} (the first is on line {first_line[name]}); "
                    "give exactly one score per image."
                )
            first_line[name] = line_no
            out[name] = score
    return out


def align(reference: Reference, predictions: Mapping[str, float], *, where: str = "predictions") -> Float[np.ndarray, " n"]:
    """Scores in reference order; an error if any reference image lacks one, a warning for extras."""
    missing = [f for f in reference.filenames if f not in predictions]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
        raise DataError(
            f"{where}: no prediction for {len(missing)} of the {len(reference.filenames)} images in "
            f"{reference.path}: {shown}. Every reference image needs a score."
        )
    if len(predictions) > len(reference.filenames):
        known = set(reference.filenames)
        extra = [f for f in predictions if f not in known]
        shown = ", ".join(repr(m) for m in extra[:_SHOWN]) + (", ..." if len(extra) > _SHOWN else "")
        logger.warning("%s: ignoring %d prediction(s) for images not in %s: %s", where, len(extra), reference.path, shown)
    return np.array([predictions[f] for f in reference.filenames], dtype=np.float64)


##########
# Metric #
##########


def challenge_metrics(
    scores: Float[np.ndarray, " n"],
    labels: Int[np.ndarray, " n"],
    groups: Int[np.ndarray, " n"],
    weights: Int[np.ndarray, "b n"] | None = None,
    *,
    roc: bool = True,
) -> dict[str, Float[np.ndarray, " b"]]:
    """Every metric of the challenge, for each row of `weights` (bootstrap counts; None = each example once).

    Returns flat keys: the leaderboard keys (see `LEADERBOARD_KEYS`) and `A.*` / `mimic.*`
    details (threshold_pred, threshold_recall, hybrid_recall, hybrid_precision, f1_score,
    accuracy, prc_auc, roc_auc; A also major_/minor_ prc_auc and roc_auc). A value is NaN
    where its weighting leaves a group without hybrids or non-hybrids. `roc=False` skips
    the ROC AUCs (not on the leaderboard), which a bootstrap does not need.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    groups = np.asarray(groups)
    if weights is None:
        weights = np.ones((1, len(scores)), dtype=np.int64)
    weights = np.asarray(weights, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    is_a = groups != MIMIC
    for prefix, members in (("A", is_a), ("mimic", groups == MIMIC)):
        s, y, w = scores[members], labels[members], weights[:, members]
        threshold, nh_recall, n_neg, n_neg_le = _threshold(s[~y], w[:, ~y])
        tp, n_pos = _count_above(s[y], w[:, y], threshold)
        fp = n_neg - n_neg_le
        out[f"{prefix}.threshold_pred"] = threshold
        out[f"{prefix}.threshold_recall"] = nh_recall
        out[f"{prefix}.hybrid_recall"] = recall = _ratio(tp, n_pos)
        precision = np.where(tp + fp > 0, _ratio(tp, tp + fp), 0.0)
        out[f"{prefix}.hybrid_precision"] = precision
        out[f"{prefix}.f1_score"] = np.where(precision + recall > 0, _ratio(2 * precision * recall, precision + recall), 0.0)
        out[f"{prefix}.accuracy"] = _ratio(tp + n_neg_le, n_pos + n_neg)
        out[f"{prefix}.prc_auc"] = average_precision(s, y, w)
        if roc:
            out[f"{prefix}.roc_auc"] = roc_auc(s, y, w)
        if prefix == "A":
            for g in (MAJOR, MINOR):
                sub = groups[is_a] == g
                name = GROUPS[g]
                found, n_h = _count_above(s[sub & y], w[:, sub & y], threshold)
                out[f"A.{name}_recall"] = _ratio(found, n_h)
                out[f"A.{name}_prc_auc"] = average_precision(s[sub], y[sub], w[:, sub])
                if roc:
                    out[f"A.{name}_roc_auc"] = roc_auc(s[sub], y[sub], w[:, sub])
        bad = (n_pos == 0) | (n_neg == 0)
        for key in [k for k in out if k.startswith(prefix + ".")]:
            out[key] = np.where(bad, np.nan, out[key])
    out["A_score_major_recall"] = out["A.major_recall"]
    out["A_score_minor_recall"] = out["A.minor_recall"]
    out["mimic_recall"] = out["mimic.hybrid_recall"]
    out["A_PRC_AUC"] = out["A.prc_auc"]
    out["A_PRC_AUC_major"] = out["A.major_prc_auc"]
    out["A_PRC_AUC_minor"] = out["A.minor_prc_auc"]
    out["mimic_PRC_AUC"] = out["mimic.prc_auc"]
    out["challenge_score"] = harmonic_mean(*(out[k] for k in RECALL_KEYS))
    return out


def harmonic_mean(*values: Float[np.ndarray, " b"]) -> Float[np.ndarray, " b"]:
    """Element-wise harmonic mean; 0 where any value is 0, NaN where any is NaN."""
    x = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    with np.errstate(divide="ignore"):
        inv = np.where(x > 0, 1.0 / np.where(x > 0, x, 1.0), np.inf)
    hm = len(values) / inv.sum(axis=0)
    return np.where(np.isnan(x).any(axis=0), np.nan, hm)


def _ratio(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _threshold(s_neg: Float[np.ndarray, " m"], w_neg: Int[np.ndarray, "b m"]):
    """Smallest distinct score with >= TARGET_PERCENT% of non-hybrid weight at or below it.

    Returns (threshold, non-hybrid recall achieved, non-hybrid total, non-hybrid weight <= threshold).
    """
    b = w_neg.shape[0]
    if len(s_neg) == 0:
        nan = np.full(b, np.nan)
        return nan, nan, np.zeros(b, dtype=np.int64), np.zeros(b, dtype=np.int64)
    order = np.argsort(s_neg, kind="stable")
    s_sorted = s_neg[order]
    cum = np.cumsum(w_neg[:, order], axis=1)
    total = cum[:, -1]
    need = -((-total * TARGET_PERCENT) // 100)  # ceil(total * 95 / 100), exact in integers
    # The first sorted position whose cumulative weight reaches `need`; with `need` > 0
    # that position carries weight, so the threshold is a score some non-hybrid has.
    pos = np.argmax(cum >= need[:, None], axis=1)
    threshold = s_sorted[pos]
    n_le = _weight_at_or_below(s_sorted, cum, threshold)
    threshold = np.where(total > 0, threshold, np.nan)
    return threshold, _ratio(n_le, total), total, n_le


def _weight_at_or_below(s_sorted, cum, t) -> np.ndarray:
    """Cumulative weight of sorted scores <= t, per row (`cum` = row-wise cumulative weights)."""
    idx = np.searchsorted(s_sorted, np.nan_to_num(t, nan=np.inf), side="right")
    rows = np.arange(cum.shape[0])
    return np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], 0)


def _count_above(s: Float[np.ndarray, " m"], w: Int[np.ndarray, "b m"], t: Float[np.ndarray, " b"]):
    """(weight with score > t, total weight), per row."""
    b = w.shape[0]
    if len(s) == 0:
        return np.zeros(b, dtype=np.int64), np.zeros(b, dtype=np.int64)
    order = np.argsort(s, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)
    total = cum[:, -1]
    return total - _weight_at_or_below(s[order], cum, t), total


def _tie_blocks(s_sorted: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal scores in sorted `s_sorted`."""
    return np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))


def average_precision(s: Float[np.ndarray, " m"], y: Int[np.ndarray, " m"], w: Int[np.ndarray, "b m"]) -> Float[np.ndarray, " b"]:
    """Average precision per row of weights: sum over distinct thresholds (high to low) of
    (recall gained) x (precision), as scikit-learn's `average_precision_score`; NaN without positives."""
    b = w.shape[0]
    if len(s) == 0:
        return np.full(b, np.nan)
    order = np.argsort(-s, kind="stable")
    ends = _tie_blocks(-s[order])
    w_sorted = w[:, order]
    tp = np.cumsum(w_sorted * np.asarray(y, dtype=np.int64)[order], axis=1)[:, ends]
    seen = np.cumsum(w_sorted, axis=1)[:, ends]
    gained = np.diff(tp, axis=1, prepend=0)
    precision = np.where(seen > 0, tp / np.maximum(seen, 1), 0.0)
    return _ratio((gained * precision).sum(axis=1), tp[:, -1])


def roc_auc(s: Float[np.ndarray, " m"], y: Int[np.ndarray, " m"], w: Int[np.ndarray, "b m"]) -> Float[np.ndarray, " b"]:
    """Area under the ROC curve per row of weights (ties count one half); NaN without both classes."""
    b = w.shape[0]
    if len(s) == 0:
        return np.full(b, np.nan)
    order = np.argsort(s, kind="stable")
    ends = _tie_blocks(s[order])
    y_sorted = np.asarray(y, dtype=np.int64)[order]
    w_sorted = w[:, order]
    cum_pos = np.cumsum(w_sorted * y_sorted, axis=1)[:, ends]
    cum_neg = np.cumsum(w_sorted * (1 - y_sorted), axis=1)[:, ends]
    pos = np.diff(cum_pos, axis=1, prepend=0)
    neg = np.diff(cum_neg, axis=1, prepend=0)
    n_pos, n_neg = cum_pos[:, -1], cum_neg[:, -1]
    # A negative is out-ranked by every positive scored above it, and by half of those tied with it.
    wins = (neg * ((n_pos[:, None] - cum_pos) + 0.5 * pos)).sum(axis=1)
    return _ratio(wins, n_pos * n_neg)


###########
# Results #
###########

DETAIL_KEYS = (
    "threshold_recall",
    "threshold_pred",
    "hybrid_recall",
    "hybrid_precision",
    "f1_score",
    "accuracy",
    "prc_auc",
    "roc_auc",
)
A_EXTRA_KEYS = ("major_recall", "minor_recall", "major_prc_auc", "minor_prc_auc", "major_roc_auc", "minor_roc_auc")


def scores_from_metrics(metrics: Mapping[str, np.ndarray], row: int = 0) -> tuple[dict, dict]:
    """(leaderboard dict, detailed dict in the layout of the challenge's test cases) for one row."""
    board = {k: float(metrics[k][row]) for k in LEADERBOARD_KEYS}
    detailed = {
        "mimic_scores": {k: float(metrics[f"mimic.{k}"][row]) for k in DETAIL_KEYS},
        "A_scores": {k: float(metrics[f"A.{k}"][row]) for k in (*DETAIL_KEYS, *A_EXTRA_KEYS)},
    }
    return board, detailed


def score(reference: Reference, predictions: Mapping[str, float], *, where: str = "predictions") -> tuple[dict, dict]:
    """Score `predictions` against `reference`: (leaderboard scores, detailed scores)."""
    scores = align(reference, predictions, where=where)
    return scores_from_metrics(challenge_metrics(scores, reference.labels, reference.groups))


def score_files(reference_csv: str | os.PathLike, predictions_txt: str | os.PathLike) -> tuple[dict, dict]:
    """Read, validate and score: (leaderboard scores, detailed scores)."""
    reference = read_reference(reference_csv)
    return score(reference, read_predictions(predictions_txt), where=str(predictions_txt))


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=4) + "\n")
    os.replace(tmp, path)


############
# CodaBench #
############


def find_reference(ref_dir: Path) -> Path:
    """The one reference CSV in CodaBench's `input/ref` (zip debris such as __MACOSX ignored)."""
    found = sorted(p for p in ref_dir.rglob("*.csv") if "__MACOSX" not in p.parts and not p.name.startswith("."))
    if len(found) != 1:
        raise DataError(f"Expected exactly one reference CSV under {ref_dir}, found {len(found)}: {[str(p) for p in found]}.")
    return found[0]


def codabench_main(argv: list[str]) -> int:
    """`score.py INPUT_DIR OUTPUT_DIR`: INPUT_DIR/ref/*.csv and INPUT_DIR/res/predictions.txt ->
    OUTPUT_DIR/scores.json (leaderboard keys) and OUTPUT_DIR/scores_detailed.json."""
    if len(argv) != 2:
        print("usage: score.py INPUT_DIR OUTPUT_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(levelname)s: %(message)s")
    input_dir, output_dir = Path(argv[0]), Path(argv[1])
    try:
        board, detailed = score_files(find_reference(input_dir / "ref"), input_dir / "res" / "predictions.txt")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_json(output_dir / "scores.json", board)
    write_json(output_dir / "scores_detailed.json", detailed)
    print(json.dumps(board, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(codabench_main(sys.argv[1:]))
