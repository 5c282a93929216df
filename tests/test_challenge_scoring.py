"""HDR challenge scoring: golden cases, an independent brute-force reference, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics

from biobench.challenge import scoring
from biobench.errors import DataError

DATA = Path(__file__).parent / "data" / "hdr"
GOLDEN = sorted(p.name for p in (DATA / "golden").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_cases_reproduce_expected_values(case):
    d = DATA / "golden" / case
    board, detailed = scoring.score_files(d / "reference.csv", d / "prediction.txt")
    expected = json.loads((d / "gt.json").read_text())
    assert {g: set(v) for g, v in detailed.items()} == {g: set(v) for g, v in expected.items()}  # same layout
    for group, values in expected.items():
        for key, value in values.items():
            assert detailed[group][key] == pytest.approx(value, abs=1e-9), (case, group, key)
    a, m = expected["A_scores"], expected["mimic_scores"]
    assert board["A_score_major_recall"] == pytest.approx(a["major_recall"], abs=1e-9)
    assert board["A_score_minor_recall"] == pytest.approx(a["minor_recall"], abs=1e-9)
    assert board["mimic_recall"] == pytest.approx(m["hybrid_recall"], abs=1e-9)
    assert board["A_PRC_AUC"] == pytest.approx(a["prc_auc"], abs=1e-9)
    assert board["A_PRC_AUC_major"] == pytest.approx(a["major_prc_auc"], abs=1e-9)
    assert board["A_PRC_AUC_minor"] == pytest.approx(a["minor_prc_auc"], abs=1e-9)
    assert board["mimic_PRC_AUC"] == pytest.approx(m["prc_auc"], abs=1e-9)
    recalls = [a["major_recall"], a["minor_recall"], m["hybrid_recall"]]
    hm = 0.0 if min(recalls) == 0 else 3 / sum(1 / r for r in recalls)
    assert board["challenge_score"] == pytest.approx(hm, abs=1e-9)
    assert list(board) == list(scoring.LEADERBOARD_KEYS)


############################
# Independent brute force  #
############################


def brute_threshold(scores, labels):
    """Try every distinct score from the smallest up; the first with >= 95% of non-hybrids at or below it."""
    neg = scores[labels == 0]
    for t in sorted(set(scores.tolist())):
        if np.sum(neg <= t) / len(neg) >= 0.95:
            return t
    raise AssertionError("unreachable: the largest score always qualifies")


def brute_group(scores, labels):
    t = brute_threshold(scores, labels)
    pred = (scores > t).astype(int)
    return {
        "threshold_pred": t,
        "threshold_recall": float(np.mean(scores[labels == 0] <= t)),
        "hybrid_recall": sklearn.metrics.recall_score(labels, pred, zero_division=0),
        "hybrid_precision": sklearn.metrics.precision_score(labels, pred, zero_division=0),
        "f1_score": sklearn.metrics.f1_score(labels, pred, zero_division=0),
        "accuracy": sklearn.metrics.accuracy_score(labels, pred),
        "prc_auc": sklearn.metrics.average_precision_score(labels, scores),
        "roc_auc": sklearn.metrics.roc_auc_score(labels, scores),
    }


def brute_force(scores, labels, groups):
    """The challenge metric written the slow, obvious way."""
    a = groups != "mimic"
    A = brute_group(scores[a], labels[a])
    mimic = brute_group(scores[~a], labels[~a])
    t = A["threshold_pred"]
    for g in ("major", "minor"):
        hyb = (groups == g) & (labels == 1)
        A[f"{g}_recall"] = float(np.mean(scores[hyb] > t))
        sub = groups == g
        A[f"{g}_prc_auc"] = sklearn.metrics.average_precision_score(labels[sub], scores[sub])
        A[f"{g}_roc_auc"] = sklearn.metrics.roc_auc_score(labels[sub], scores[sub])
    recalls = [A["major_recall"], A["minor_recall"], mimic["hybrid_recall"]]
    challenge = 0.0 if min(recalls) == 0 else 3 / sum(1 / r for r in recalls)
    return {"A_scores": A, "mimic_scores": mimic, "challenge_score": challenge}


def _generated(kind: str, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    if kind == "random":
        return rng.random(n)
    if kind == "random-ties":  # few distinct values: thresholds must never split a tie
        return np.round(rng.random(n), 1)
    if kind == "near-perfect":  # hybrids high, a few swapped, plus ties at the top
        s = np.where(labels == 1, 0.8 + 0.2 * rng.random(n), 0.3 * rng.random(n))
        flip = rng.random(n) < 0.02
        s[flip] = 1 - s[flip]
        s[(rng.random(n) < 0.1) & (labels == 1)] = 1.0
        return s
    if kind == "constant":
        return np.full(n, 0.5)
    raise ValueError(kind)


@pytest.fixture(scope="module")
def ref_test():
    ref = scoring.read_reference(DATA / "ref_test.csv")
    groups = np.array(scoring.GROUPS)[ref.groups]
    return ref, groups


@pytest.mark.parametrize("kind", ["random", "random-ties", "near-perfect", "constant"])
@pytest.mark.parametrize("seed", [0, 1])
def test_metric_equals_brute_force_on_real_reference(ref_test, kind, seed, tmp_path):
    ref, groups = ref_test
    labels = ref.labels.astype(int)
    scores = _generated(kind, labels, np.random.default_rng(seed))
    pred = tmp_path / "predictions.txt"
    pred.write_text("".join(f"{f},{float(s)!r}\n" for f, s in zip(ref.filenames, scores)))
    board, detailed = scoring.score_files(DATA / "ref_test.csv", pred)
    expected = brute_force(scores, labels, groups)
    for group in ("A_scores", "mimic_scores"):
        assert set(detailed[group]) == set(expected[group])
        for key, value in expected[group].items():
            assert detailed[group][key] == pytest.approx(value, abs=1e-12), (group, key)
    assert board["challenge_score"] == pytest.approx(expected["challenge_score"], abs=1e-12)
    if kind == "near-perfect":
        assert board["challenge_score"] > 0.7
    if kind == "constant":
        assert board["challenge_score"] == 0.0


def test_weighted_metrics_equal_metrics_on_resampled_data(ref_test):
    """Bootstrap weights (resample counts) give exactly the metric of the resampled examples."""
    ref, _ = ref_test
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(len(ref.labels)) + 0.4 * ref.labels, 2)
    n = len(scores)
    idx = rng.integers(0, n, size=(4, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    batched = scoring.challenge_metrics(scores, ref.labels, ref.groups, counts)
    for r in range(len(idx)):
        single = scoring.challenge_metrics(scores[idx[r]], ref.labels[idx[r]], ref.groups[idx[r]])
        for key, value in single.items():
            np.testing.assert_allclose(batched[key][r], value[0], rtol=0, atol=1e-12, err_msg=key)


def test_degenerate_weighting_gives_nan_not_an_error():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    labels = np.array([0, 1, 0, 1, 0, 1])
    groups = np.array([0, 0, 1, 1, 2, 2])
    w = np.array([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0: no minor hybrid
    m = scoring.challenge_metrics(scores, labels, groups, w)
    assert np.isnan(m["A_score_minor_recall"][0]) and np.isnan(m["challenge_score"][0])
    assert m["challenge_score"][1] == 1.0


def test_harmonic_mean():
    np.testing.assert_allclose(scoring.harmonic_mean(np.array([1.0, 0.5]), np.array([0.5, 0.0]), np.array([0.25, 1.0])), [3 / 7, 0.0])


##############
# Bad input  #
##############


def _write(tmp_path: Path, ref_rows: list[tuple[str, int, str]], pred_lines: list[str]) -> tuple[Path, Path]:
    ref = tmp_path / "ref.csv"
    ref.write_text("filename,hybrid_stat,ssp_indicator\n" + "".join(f"{f},{h},{g}\n" for f, h, g in ref_rows))
    pred = tmp_path / "predictions.txt"
    pred.write_text("".join(line + "\n" for line in pred_lines))
    return ref, pred


GOOD_REF = [(f"img {i}.jpg", i % 2, ("major", "minor", "mimic")[i // 4]) for i in range(12)]
GOOD_PRED = [f"img {i}.jpg,{0.1 * i}" for i in range(12)]


def test_good_input_scores(tmp_path):
    board, _ = scoring.score_files(*_write(tmp_path, GOOD_REF, GOOD_PRED))
    assert set(board) == set(scoring.LEADERBOARD_KEYS)


def test_missing_predictions_error_names_count_and_files(tmp_path):
    with pytest.raises(DataError, match=r"no prediction for 3 of the 12 images.*'img 0.jpg', 'img 1.jpg', 'img 2.jpg'"):
        scoring.score_files(*_write(tmp_path, GOOD_REF, GOOD_PRED[3:]))


def test_unparsable_score_names_the_line(tmp_path):
    lines = [*GOOD_PRED]
    lines[4] = "img 4.jpg,high"
    with pytest.raises(DataError, match=r"predictions.txt:5: cannot parse the score 'high' of 'img 4.jpg'"):
        scoring.score_files(*_write(tmp_path, GOOD_REF, lines))


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_score_names_the_line(tmp_path, bad):
    lines = [*GOOD_PRED]
    lines[2] = f"img 2.jpg,{bad}"
    with pytest.raises(DataError, match=r"predictions.txt:3: the score of 'img 2.jpg'.*finite"):
        scoring.score_files(*_write(tmp_path, GOOD_REF, lines))


def test_line_without_comma_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r":13: expected 'filename,score'"):
        scoring.score_files(*_write(tmp_path, GOOD_REF, [*GOOD_PRED, "just-a-name"]))


def test_extra_predictions_are_ignored_with_a_warning(tmp_path, caplog):
    ref, pred = _write(tmp_path, GOOD_REF, GOOD_PRED)
    expected, _ = scoring.score_files(ref, pred)
    _, pred_extra = _write(tmp_path, GOOD_REF, [*GOOD_PRED, "other.jpg,0.99", "another.png,0.5"])
    with caplog.at_level(logging.WARNING):
        board, _ = scoring.score_files(ref, pred_extra)
    assert board == expected
    assert "ignoring 2 prediction(s)" in caplog.text and "'other.jpg'" in caplog.text


def test_duplicate_predictions_are_an_error(tmp_path):
    with pytest.raises(DataError, match=r":13: a second prediction for 'img 3.jpg' \(the first is on line 4\)"):
        scoring.score_files(*_write(tmp_path, GOOD_REF, [*GOOD_PRED, "img 3.jpg,0.5"]))


@pytest.mark.parametrize(
    ("group", "label", "message"),
    [
        ("minor", 0, r"group 'minor' has 0 hybrid\(s\) and 4 non-hybrid\(s\)"),
        ("mimic", 1, r"group 'mimic' has 4 hybrid\(s\) and 0 non-hybrid\(s\)"),
    ],
)
def test_group_without_hybrids_or_non_hybrids_is_an_error(tmp_path, group, label, message):
    rows = [(f, label if g == group else h, g) for f, h, g in GOOD_REF]
    with pytest.raises(DataError, match=message):
        scoring.score_files(*_write(tmp_path, rows, GOOD_PRED))


def test_reference_errors(tmp_path):
    ref = tmp_path / "r.csv"
    ref.write_text("filename,hybrid_stat\na,0\n")
    with pytest.raises(DataError, match="lacks column.*ssp_indicator"):
        scoring.read_reference(ref)
    ref.write_text("filename,hybrid_stat,ssp_indicator\na,2,major\n")
    with pytest.raises(DataError, match=r"r.csv:2: hybrid_stat of 'a' must be 0 or 1"):
        scoring.read_reference(ref)
    ref.write_text("filename,hybrid_stat,ssp_indicator\na,0,other\n")
    with pytest.raises(DataError, match="must be major, minor or mimic"):
        scoring.read_reference(ref)
    ref.write_text("filename,hybrid_stat,ssp_indicator\na,0,major\na,1,major\n")
    with pytest.raises(DataError, match=r"r.csv:3: filename 'a' also on line 2"):
        scoring.read_reference(ref)
    with pytest.raises(DataError, match="Reference file not found"):
        scoring.read_reference(tmp_path / "nope.csv")


def test_real_reference_files_read():
    for name, n in (("ref_val.csv", 1175), ("ref_test.csv", 2350)):
        ref = scoring.read_reference(DATA / name)
        assert len(ref.filenames) == n


def test_codabench_entry_point(tmp_path):
    d = DATA / "golden" / "all_correct"
    (tmp_path / "in" / "ref").mkdir(parents=True)
    (tmp_path / "in" / "res").mkdir()
    (tmp_path / "in" / "ref" / "ref_val.csv").write_bytes((d / "reference.csv").read_bytes())
    (tmp_path / "in" / "res" / "predictions.txt").write_bytes((d / "prediction.txt").read_bytes())
    assert scoring.codabench_main([str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    board = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert board["challenge_score"] == 1.0 and list(board) == list(scoring.LEADERBOARD_KEYS)
    assert json.loads((tmp_path / "out" / "scores_detailed.json").read_text())["A_scores"]["roc_auc"] == 1.0
