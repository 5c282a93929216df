"""The leaderboard's statistics on constructed stores: tie marks, rank intervals, the mean's joint interval, filters."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import numpy as np
import pytest

from biobench import report, stats
from biobench.evaluation import TaskReport
from biobench.report import board
from biobench.store import ExperimentKey, Report, Store

PROVENANCE = {"argv": [], "git_commit": "abc123", "package_versions": {"numpy": "2.0"}, "host": "h1", "gpu": None, "posix_time": 1.7e9}


def write(store: Store, task: str, model: str, correct, *, seed=0, n_train=-1, metric="accuracy", labels=None, preds=None,
          groups=None, score=None, method="cvml", extra=None) -> None:  # fmt: skip
    correct = np.asarray(correct, dtype=np.float64)
    n = len(correct)
    infos = []
    for i in range(n):
        info = {"label": int(labels[i]) if labels is not None else 0, "pred": int(preds[i]) if preds is not None else 0}
        if groups is not None:
            info["group"] = groups[i]
        infos.append(info | (extra[i] if extra is not None else {}))
    org, ckpt = model.split(":")
    result = TaskReport(
        metric=metric, score=float(correct.mean()) if score is None else score, ci_low=0.0, ci_high=1.0, n_train_actual=10,
        example_ids=[f"e{i:04d}" for i in range(n)], example_scores=correct, example_info=infos,
        sub_scores={"cluster": {"a": {metric: 0.5, "n_test": 3}, "b": {metric: 0.7, "n_test": 4}}},
    )  # fmt: skip
    key = ExperimentKey(task, org, ckpt, method, n_train, seed, f"{task}/v1")
    store.write(Report(key, result, {"task": {}}, PROVENANCE))


def flip(x: np.ndarray, k: int, rng) -> np.ndarray:
    """x with k right answers made wrong and k - 1 wrong ones made right: one example apart, 2k - 1 discordant."""
    x = x.copy()
    x[rng.choice(np.flatnonzero(x == 1), size=k, replace=False)] = 0
    x[rng.choice(np.flatnonzero(x == 0), size=k - 1, replace=False)] = 1
    return x


@pytest.fixture
def constructed(tmp_path):
    """Task 'one': a:x clearly best, b:y and c:z indistinguishable. Task 'two': b:y and c:z best, a:x clearly worse."""
    rng = np.random.default_rng(0)
    db = tmp_path / "r.sqlite"
    data = {}
    with Store(db) as store:
        for task, n, p_a, p_bc in (("one", 400, 0.9, 0.7), ("two", 300, 0.6, 0.8)):
            a = (rng.random(n) < p_a).astype(float)
            b = (rng.random(n) < p_bc).astype(float)
            c = flip(b, 4, rng)  # one right answer fewer than b
            data[task] = {"a:x": a, "b:y": b, "c:z": c}
            for model, x in data[task].items():
                write(store, task, model, x)
    return db, data


def hand_paired(data: dict[str, np.ndarray], task: str, n_resamples=1000, alpha=0.05):
    """Tie marks and rank bounds by hand: loops over replicates and comparisons, Holm written out."""
    n = len(next(iter(data.values())))
    w = board.weights(n, n_resamples, board.column_seed(0, task, f"{task}/v1", -1))[1:]
    models = sorted(data)
    est = {m: data[m].mean() for m in models}
    reps = {m: np.array([float(np.dot(row, data[m]) / row.sum()) for row in w]) for m in models}
    return hand_tests(est, reps, n_resamples, alpha)


def hand_tests(est: dict[str, float], reps: dict[str, np.ndarray], n_resamples=1000, alpha=0.05):
    """Tie marks and rank bounds from estimates and paired replicates: loops over comparisons, Holm written out."""
    models = sorted(est)
    better = {}
    for j in models:
        ps = {}
        for k in models:
            if k == j:
                continue
            d = est[j] - est[k]
            if d <= 0:
                ps[k] = 1.0
                continue
            count = sum(1 for r in range(n_resamples) if (reps[j][r] - reps[k][r]) - d >= d - 1e-12)
            ps[k] = (1 + count) / (n_resamples + 1)
        ordered = sorted(ps, key=ps.get)
        running, adjusted = 0.0, {}
        for i, k in enumerate(ordered):
            running = max(running, min(1.0, (len(ordered) - i) * ps[k]))
            adjusted[k] = running
        for k in ordered:
            better[j, k] = adjusted[k] <= alpha
    best = max(models, key=est.get)
    tied = {m: m == best or not better[best, m] for m in models}
    ranks = {
        m: (1 + sum(better.get((j, m), False) for j in models), len(models) - sum(better.get((m, k), False) for k in models))
        for m in models
    }
    return tied, ranks


def test_tie_marks_and_rank_intervals_match_a_hand_computed_paired_bootstrap(constructed):
    db, data = constructed
    rows = json.loads(report.render(report.load(db), "json", db))
    for task in ("one", "two"):
        tied, ranks = hand_paired(data[task], task)
        got = {r["model"]: r for r in rows if r["task"] == task}
        assert {m: got[m]["tied"] for m in got} == tied
        assert {m: (got[m]["rank_low"], got[m]["rank_high"]) for m in got} == ranks
    one = {r["model"]: r for r in rows if r["task"] == "one"}
    two = {r["model"]: r for r in rows if r["task"] == "two"}
    # The constructed truth: one clear winner in 'one'; two indistinguishable winners in 'two'.
    assert [m for m in sorted(one) if one[m]["tied"]] == ["a:x"] and (one["b:y"]["rank_low"], one["b:y"]["rank_high"]) == (2, 3)
    assert [m for m in sorted(two) if two[m]["tied"]] == ["b:y", "c:z"] and (two["a:x"]["rank_low"], two["a:x"]["rank_high"]) == (3, 3)


def test_the_mean_interval_is_a_direct_joint_resample(constructed):
    db, data = constructed
    rows = json.loads(report.render(report.load(db), "json", db))
    means = {r["model"]: r for r in rows if r["task"] == "mean"}
    assert set(means) == {"a:x", "b:y", "c:z"}
    w = {t: board.weights(len(data[t]["a:x"]), 1000, board.column_seed(0, t, f"{t}/v1", -1))[1:] for t in data}
    for model, row in means.items():
        direct = []
        for r in range(1000):  # replicate r: every task's test set resampled, the same draw for every model
            per_task = []
            for t in data:
                idx = np.repeat(np.arange(len(w[t][r])), w[t][r].astype(int))
                per_task.append(data[t][model][idx].mean())
            direct.append(np.mean(per_task))
        estimate = np.mean([data[t][model].mean() for t in data])
        low, high = np.quantile(direct, [0.025, 0.975])
        assert row["score"] == pytest.approx(estimate)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(min(low, estimate)), pytest.approx(max(high, estimate)))
        assert row["seed"] is None and row["metric"] == "mean" and row["n_test"] == 700
    # a:x wins 'one' by 0.2 and loses 'two' by 0.2: the mean cannot tell the three apart.
    assert all(r["tied"] for r in means.values())


def test_a_model_missing_a_task_has_no_mean(constructed, tmp_path):
    db, data = constructed
    with Store(db) as store:
        write(store, "one", "d:w", data["one"]["b:y"])
    text = report.render(report.load(db), "table", db)
    assert "(1/2 tasks)" in text
    rows = json.loads(report.render(report.load(db), "json", db))
    assert "d:w" not in {r["model"] for r in rows if r["task"] == "mean"}


def test_clustered_and_macro_intervals_match_the_stats_functions(tmp_path):
    """One seed, one model: the cell's interval is the stats module's, on the column's seed."""
    rng = np.random.default_rng(1)
    n = 300
    groups = [f"g{i // 10:02d}" for i in range(n)]  # 30 groups of 10, homogeneous within group
    skill = rng.random(30) < 0.6
    correct = np.where(np.repeat(skill, 10), rng.random(n) < 0.9, rng.random(n) < 0.2).astype(float)
    y = rng.integers(0, 5, size=n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, size=n))
    f1 = float(stats.macro_f1(y, p))
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        write(store, "reid", "a:x", correct, groups=groups)
        write(store, "macro", "a:x", (y == p).astype(float), metric="macro_f1", labels=y, preds=p, score=f1)
    b = report.build(report.load(db), db)
    cols = {c.task: c for c in b.columns}
    cell = cols["reid"].cells["a:x", "cvml"]
    # Directly: draw 30 of the 30 groups with replacement, pool their examples, take the accuracy.
    draws = np.random.default_rng(board.column_seed(0, "reid", "reid/v1", -1)).integers(0, 30, size=(1000, 30))
    by_group = correct.reshape(30, 10)
    direct = np.array([by_group[d].mean() for d in draws])
    want = stats.percentile_interval(direct, correct.mean())
    assert cols["reid"].units == "groups" and (cell.ci_low, cell.ci_high) == (pytest.approx(want[0]), pytest.approx(want[1]))
    cell = cols["macro"].cells["a:x", "cvml"]
    seed = board.column_seed(0, "macro", "macro/v1", -1)
    want = stats.metric_ci(lambda idx: stats.macro_f1(y, p, idx), n, strata=y, seed=seed)
    assert cell.score == pytest.approx(f1) and cell.tied
    assert (cell.ci_low, cell.ci_high) == (pytest.approx(want.low), pytest.approx(want.high))


def test_unreproducible_or_unpaired_results_get_no_tie_flag(tmp_path):
    db = tmp_path / "r.sqlite"
    x = (np.arange(100) % 3 == 0).astype(float)
    with Store(db) as store:
        write(store, "t", "a:x", x)
        write(store, "t", "b:y", x, score=0.99)  # stored score that its predictions do not give
    sqlite3.connect(db).execute("PRAGMA foreign_keys = ON")
    b = report.build(report.load(db), db)
    cells = b.columns[0].cells
    assert cells["a:x", "cvml"].tied is True and cells["b:y", "cvml"].tied is None
    assert "not reproduced" in cells["b:y", "cvml"].note


def test_csv_and_json_carry_the_new_keys_and_filters_select(constructed):
    db, _ = constructed
    rows = report.load(db)
    data = list(csv.DictReader(io.StringIO(report.render(rows, "csv", db))))
    assert list(data[0]) == list(report.CSV_KEYS) and {d["task"] for d in data} == {"one", "two", "mean"}
    only = report.select(rows, tasks=["one"], models=["a:*", "b:y"])
    assert {(r["task"], r["model"]) for r in only} == {("one", "a:x"), ("one", "b:y")}
    with pytest.raises(Exception, match="the database holds: one, two"):
        report.select(rows, tasks=["three"])
    with pytest.raises(Exception, match="n_train"):
        report.select(rows, n_train=8)
    assert report.select(rows, methods=["cvml"]) == rows


def test_terminal_table_marks_ties_in_plain_text_and_colours_only_on_a_tty(constructed):
    db, _ = constructed
    rows = report.load(db)
    plain = report.render(rows, "table", db)
    assert "\x1b[" not in plain and report.TIE in plain and "mean" in plain.splitlines()[1]
    coloured = report.render(rows, "table", db, tty=True)
    assert report.BOLD_GREEN in coloured


def test_json_and_csv_match_a_store_filled_by_fixture_runs(config_file, newt_dir, tmp_path):
    from biobench import config, runner
    from tests.test_end_to_end import newt_config

    models = 'org = "builtin"\nckpt = "pixel-stats"\n\n[[models]]\norg = "counting"\nckpt = "v1"'
    runner.run(config.load(newt_config(config_file, newt_dir, models=models, extra="n_train = [4, -1]")))
    db = tmp_path / "results" / "results.sqlite"
    rows = report.load(db)
    data = json.loads(report.render(rows, "json", db))
    table = list(csv.DictReader(io.StringIO(report.render(rows, "csv", db))))
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT task, model_org || ':' || model_ckpt, method, n_train, seed, protocol, metric, score, ci_low, "
                          "ci_high, n_test FROM experiments").fetchall()  # fmt: skip
    assert len(stored) == 4
    experiments = [d for d in data if d["task"] != "mean"]
    assert sorted(tuple(d[k] for k in report.JSON_KEYS[:11]) for d in experiments) == sorted(stored)
    assert sorted((c["task"], c["model"], int(c["seed"]), float(c["score"])) for c in table) == sorted(
        (s[0], s[1], s[4], s[7]) for s in stored
    )
    # Every experiment at the leaderboard's n_train (all) was paired and tested; those at n_train 4 were not.
    assert all(d["tied"] is not None and 1 <= d["rank_low"] <= d["rank_high"] <= 2 for d in experiments if d["n_train"] == -1)
    assert all(d["tied"] is None for d in experiments if d["n_train"] == 4)
    assert any(d["tied"] for d in experiments)


def test_newt_resamples_its_sub_tasks(tmp_path):
    """NeWT's metric clusters by the stored sub-task (`task`): the cell's interval is a direct resample of tasks."""
    rng = np.random.default_rng(2)
    tasks = [f"t{i}" for i in range(8)]
    names = [t for t in tasks for _ in range(25)]  # ids e0000.. in task order
    correct = np.concatenate([rng.random(25) < p for p in rng.uniform(0.3, 0.95, size=8)]).astype(float)
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        write(store, "newt", "a:x", correct, extra=[{"task": t} for t in names])
    col = report.build(report.load(db), db).columns[0]
    cell = col.cells["a:x", "cvml"]
    draws = np.random.default_rng(board.column_seed(0, "newt", "newt/v1", -1)).integers(0, 8, size=(1000, 8))
    by_task = correct.reshape(8, 25)
    want = stats.percentile_interval(np.array([by_task[d].mean() for d in draws]), correct.mean())
    assert col.units == "groups" and (cell.ci_low, cell.ci_high) == (pytest.approx(want[0]), pytest.approx(want[1]))


def test_hybrids_challenge_score_is_recomputed_paired_and_ranked(tmp_path):
    """The challenge score (thresholds on ranked log-odds, per group) is recomputed from the stored predictions:
    tie marks and ranks match a hand-written paired bootstrap that scores each resampled set directly."""
    from biobench.challenge import scoring
    from biobench.tasks import hybrids

    rng = np.random.default_rng(4)
    sizes = {"major": (30, 40), "minor": (20, 40), "mimic": (25, 45)}
    groups = np.array([g for g, (h, nh) in sizes.items() for _ in range(h + nh)])
    y = np.concatenate([np.r_[np.ones(h), np.zeros(nh)] for h, nh in sizes.values()]).astype(int)
    g_idx = np.array([scoring.GROUPS.index(g) for g in groups], dtype=np.int8)
    base = rng.normal(size=len(y))
    logits = {"a:x": 3.0 * y + base, "b:y": 1.0 * y + rng.normal(size=len(y)), "c:z": None}
    logits["c:z"] = logits["b:y"] + rng.normal(0, 0.05, size=len(y))  # nearly b:y
    db = tmp_path / "r.sqlite"
    est = {}
    with Store(db) as store:
        for model, p in logits.items():
            est[model] = float(scoring.challenge_metrics(p, y, g_idx)["challenge_score"][0])
            write(store, "hybrids", model, p, labels=y, groups=list(groups), score=est[model], metric="challenge_score")
    b = report.build(report.load(db), db, n_resamples=200)
    col = b.columns[0]
    seed = board.column_seed(0, "hybrids", "hybrids/v1", -1)
    (idx,) = stats.resample_indices(len(y), n_resamples=200, seed=seed, strata=hybrids.bootstrap_strata(y, g_idx))
    reps = {m: np.array([scoring.challenge_metrics(p[i], y[i], g_idx[i])["challenge_score"][0] for i in idx]) for m, p in logits.items()}
    tied, ranks = hand_tests(est, reps, 200)
    cells = col.cells
    assert col.units == "examples within strata" and not col.note
    assert {m: cells[m, "cvml"].tied for m in logits} == tied and tied["a:x"] and not tied["b:y"]
    assert {m: (cells[m, "cvml"].rank_low, cells[m, "cvml"].rank_high) for m in logits} == ranks
    want = stats.percentile_interval(reps["a:x"], est["a:x"])
    assert (cells["a:x", "cvml"].ci_low, cells["a:x", "cvml"].ci_high) == (pytest.approx(want[0]), pytest.approx(want[1]))


def test_a_metric_with_its_own_bootstrap_form_is_recomputed(tmp_path):
    """FungiCLEF's user score (costs normalised per replicate) through `value(labels, predictions, idx)`."""
    from biobench.tasks import fungiclef

    rng = np.random.default_rng(5)
    y = rng.choice([20, 25, 1, 2, 3, 4], size=300)
    p = np.where(rng.random(300) < 0.7, y, rng.choice([20, 1, 2], size=300))
    score = float(fungiclef.user_score(y, p))
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        write(store, "fungiclef", "a:x", (y == p).astype(float), metric="user_score", labels=y, preds=p, score=score)
    cell = report.build(report.load(db), db).columns[0].cells["a:x", "cvml"]
    seed = board.column_seed(0, "fungiclef", "fungiclef/v1", -1)
    want = stats.metric_ci(lambda idx: fungiclef.user_score(y, p, idx), 300, seed=seed)
    assert cell.tied is True and cell.rank_low == 1
    assert (cell.ci_low, cell.ci_high) == (pytest.approx(want.low), pytest.approx(want.high))


def test_packed_arrays_and_the_row_read_of_older_stores_give_the_same_board(constructed, tmp_path):
    db, _ = constructed
    rows = report.load(db)
    packed = report.build(rows, db)
    old = tmp_path / "old.sqlite"
    src = sqlite3.connect(db)
    src.backup(dst := sqlite3.connect(old))
    src.close()
    dst.execute("DROP TABLE prediction_arrays")  # a database from before the packed arrays
    dst.commit()
    dst.close()
    from_rows = report.build(report.load(old), old)
    for a, c in zip(packed.columns, from_rows.columns, strict=True):
        assert a.units == c.units and {k: np.array_equal(v, c.reps[k]) for k, v in a.reps.items()} == dict.fromkeys(c.reps, True)
        assert {k: (x.tied, x.rank_low, x.rank_high, x.ci_low, x.ci_high) for k, x in a.cells.items()} == {
            k: (x.tied, x.rank_low, x.rank_high, x.ci_low, x.ci_high) for k, x in c.cells.items()
        }
    with Store(old) as store:  # opened for writing: the table is back, empty; the board still reads the rows
        assert store.conn.execute("SELECT count(*) FROM prediction_arrays").fetchone()[0] == 0
    assert report.render(report.load(old), "json", old) == report.render(rows, "json", db)


@pytest.mark.parametrize(
    "values, packed",
    [([3, -1, 200000, 7], True), ([[0, 1, 1], [1, 0, 0]], True), (["a", "b"], False), ([1, None, 2], False),
     ([True, False], False), ([[1, 2], [3]], False), ([2**70, 1], False), ([0.5, 1], False), ([None, None], None)],
)  # fmt: skip
def test_packed_values_read_back_as_the_json_rows_say(values, packed):
    """Integer arrays are packed as arrays, anything else as JSON text, nothing for a field absent everywhere."""
    from biobench.store import pack_values, unpack_values

    blob = pack_values(values)
    got = unpack_values(blob, len(values))
    assert (got.tolist() if isinstance(got, np.ndarray) else got) == values
    assert (None if blob is None else isinstance(got, np.ndarray)) == packed


def test_the_packed_arrays_are_written_in_the_experiments_transaction(tmp_path, monkeypatch):
    """A write that fails at the packed arrays leaves nothing: no experiment, no prediction rows."""
    import biobench.store as store_mod

    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        write(store, "t", "a:x", np.ones(5))

        def boom(*args):
            raise RuntimeError("disk gone")

        monkeypatch.setattr(store_mod, "packed_row", boom)
        with pytest.raises(RuntimeError, match="disk gone"):
            write(store, "t", "b:y", np.ones(5))
        counts = [
            store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("experiments", "predictions", "prediction_arrays")
        ]
    assert counts == [1, 5, 1]
