"""NeWT: filters (small_data_metrics semantics), data validation, protocol and sub-scores."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.plan import task_protocol
from biobench.probes import svm
from biobench.routes import probe as route
from biobench.tasks import newt


def evaluate(examples, features, ctx):
    return route.evaluate(newt.SPEC, newt.Options(data="."), examples, features, ctx)


def cfg(**kw) -> newt.Options:
    return newt.Options(data=kw.pop("data", "."), **{k: tuple(v) for k, v in kw.items()})


# The filter semantics of small_data_metrics' `Newt` config, including its tests' edge cases.
def test_no_filters_includes_everything():
    assert newt.include_task(cfg(), "task1", "cluster1", "subcluster1")


def test_exclusions():
    assert not newt.include_task(cfg(exclude_tasks=["task1", "task2"]), "task1", "cluster1", "subcluster1")
    assert newt.include_task(cfg(exclude_tasks=["task1", "task2"]), "task3", "cluster1", "subcluster1")
    assert not newt.include_task(cfg(exclude_clusters=["cluster1"]), "task1", "cluster1", "subcluster1")
    assert newt.include_task(cfg(exclude_clusters=["cluster1"]), "task1", "cluster2", "subcluster1")
    c = cfg(exclude_subclusters=["subcluster1"])
    assert not newt.include_task(c, "task1", "cluster1", "subcluster1")
    assert newt.include_task(c, "task1", "cluster1", "subcluster2")
    assert newt.include_task(c, "task1", "cluster1", None)


def test_inclusions():
    assert newt.include_task(cfg(tasks=["task1"]), "task1", "c", "s")
    assert not newt.include_task(cfg(tasks=["task1"]), "task3", "c", "s")
    assert newt.include_task(cfg(include_clusters=["cluster1"]), "t", "cluster1", "s")
    assert not newt.include_task(cfg(include_clusters=["cluster1"]), "t", "cluster2", "s")
    c = cfg(include_subclusters=["subcluster1"])
    assert newt.include_task(c, "t", "c", "subcluster1")
    assert not newt.include_task(c, "t", "c", "subcluster2")
    assert not newt.include_task(c, "t", "c", None)  # no subcluster cannot match an include filter


def test_any_inclusion_matches_and_exclusion_wins():
    c = cfg(tasks=["task2"], include_clusters=["cluster1"], include_subclusters=["subcluster2"])
    assert newt.include_task(c, "task1", "cluster1", "subcluster1")
    assert newt.include_task(c, "task1", "cluster2", "subcluster2")
    assert newt.include_task(c, "task2", "cluster2", "subcluster3")
    assert not newt.include_task(c, "task3", "cluster3", "subcluster3")
    assert not newt.include_task(cfg(tasks=["task1"], exclude_tasks=["task1"]), "task1", "c", "s")
    assert not newt.include_task(cfg(include_clusters=["c"], exclude_subclusters=["s"]), "t", "c", "s")


def test_fixture_is_in_real_format(newt_dir):
    df = pl.read_csv(newt_dir / newt.LABELS_CSV)
    assert df.columns == ["id", "task_cluster", "task_subcluster", "task", "label", "text_label", "split", "height", "width"]
    assert df["task"].n_unique() == len(newt.FIXTURE_TASKS)
    assert df["task_cluster"].n_unique() >= 2
    assert df["task_subcluster"].null_count() > 0  # some tasks have no subcluster, as in the real file
    assert set(df["split"]) == {"train", "test"}
    first = df.row(0, named=True)
    assert (newt_dir / newt.IMAGES_DIR / f"{first['id']}.jpg").is_file()
    assert len(first["id"]) == 36  # a UUID


def test_read_applies_filters(newt_dir):
    full = newt.read(cfg(data=newt_dir)).images
    read = newt.read(cfg(data=newt_dir, include_clusters=["appearance"], exclude_tasks=["ml_age_bald_eagle"]))
    appearance = read.images
    assert len(full) == len(newt.FIXTURE_TASKS) * 40
    tasks = set(read.table["subtask"])
    assert "ml_age_bald_eagle" not in tasks and tasks <= {t for t, c, *_ in newt.FIXTURE_TASKS if c == "appearance"}
    assert len(appearance) == 40 * len(tasks)
    assert all(p.name == f"{i}.jpg" for i, p in zip(appearance.ids, appearance.paths))
    with pytest.raises(DataError, match="filters"):
        newt.read(cfg(data=newt_dir, tasks=["nope"]))


def test_protocol_changes_with_filters_only(newt_dir):
    assert task_protocol(newt.SPEC, cfg(data=newt_dir)) == "newt/v1"
    assert task_protocol(newt.SPEC, cfg(data="/elsewhere")) == "newt/v1"
    filtered = task_protocol(newt.SPEC, cfg(data=newt_dir, include_clusters=["appearance"]))
    assert filtered.startswith("newt/v1+") and filtered != task_protocol(newt.SPEC, cfg(data=newt_dir, include_clusters=["context"]))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda df: df.drop("split"), "lacks column"),
        (
            lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(2).otherwise(pl.col("label")).alias("label")),
            "label must be 0 or 1",
        ),
        (
            lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("val")).otherwise(pl.col("split")).alias("split")),
            "split must be train or test",
        ),
        (lambda df: pl.concat([df, df.head(1)]), "appears 2 times"),
    ],
)
def test_bad_labels_file_is_a_clear_error(tmp_path, newt_dir, edit, message):
    d = tmp_path / "newt"
    d.mkdir()
    edit(pl.read_csv(newt_dir / newt.LABELS_CSV)).write_csv(d / newt.LABELS_CSV)
    with pytest.raises(DataError, match=message) as info:
        newt.read(cfg(data=d))
    assert str(d / newt.LABELS_CSV) in str(info.value)


def test_missing_labels_file_suggests_download_and_fixture(tmp_path):
    with pytest.raises(DataError) as info:
        newt.read(cfg(data=tmp_path))
    assert "biobench download newt" in str(info.value) and "biobench fixture newt" in str(info.value)


def test_missing_images_are_listed(tmp_path, newt_dir):
    d = tmp_path / "newt"
    shutil.copytree(newt_dir, d)
    victims = sorted((d / newt.IMAGES_DIR).iterdir())[:3]
    for v in victims:
        v.unlink()
    images = newt.read(cfg(data=d)).images
    with pytest.raises(DataError) as info:
        images.keys()
    assert "3 of" in str(info.value) and victims[0].name in str(info.value)


def random_features(examples, seed=0, dim=16) -> np.ndarray:
    """Features with a per-task linear signal, to test the protocol without a backbone (one example per image)."""
    rng = np.random.default_rng(seed)
    labels = examples.table["label"].to_numpy()
    x = rng.normal(size=(len(examples.images), dim))
    x[:, 0] += 2.0 * labels
    return x.astype(np.float32)


def test_evaluate_matches_a_direct_sklearn_run_of_the_seed_protocol(newt_dir):
    images = newt.read(cfg(data=newt_dir, tasks=["ml_tag_nest", "ml_age_coopers_hawk"]))
    x = random_features(images)
    report = evaluate(images, x, EvalContext(n_train=-1, seed=3, n_bootstrap=200))

    # Independent reference: the seed's recipe written out with scikit-learn.
    df = images.table.rename({"subtask": "task"})
    expected = []
    for task in sorted(set(df["task"])):
        m = (df["task"] == task).to_numpy()
        tr = m & (df["split"] == "train").to_numpy()
        te = m & (df["split"] == "test").to_numpy()
        feats = x / np.linalg.norm(x, axis=1, keepdims=True)
        mean = feats[tr].mean(0, keepdims=True)
        xt = feats[tr] - mean
        xt /= np.linalg.norm(xt, axis=1, keepdims=True)
        xs = feats[te] - mean
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        search = sklearn.model_selection.RandomizedSearchCV(
            sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
            svm.search_space(),
            n_iter=100,
            random_state=3,
        )
        search.fit(xt, df["label"].to_numpy()[tr])
        expected.extend(search.predict(xs) == df["label"].to_numpy()[te])
    assert report.score == pytest.approx(np.mean(expected))
    assert np.array_equal(report.example_scores, np.array(expected, dtype=float))
    assert report.metric == "accuracy" and report.n_test == len(expected)
    assert report.ci_low <= report.score <= report.ci_high
    assert set(report.sub_scores) == {"cluster", "subcluster", "task"}
    assert report.sub_scores["task"]["ml_tag_nest"]["n_train"] == 20
    assert report.sub_scores["subcluster"]["(none)"]["n_test"] == 20
    info = report.example_info[0]
    assert set(info) == {"task", "cluster", "subcluster", "label", "pred"}


def test_small_n_train_is_balanced_seeded_and_uses_linear_svc(newt_dir):
    images = newt.read(cfg(data=newt_dir))
    x = random_features(images)
    a = evaluate(images, x, EvalContext(n_train=4, seed=1, n_bootstrap=100))
    b = evaluate(images, x, EvalContext(n_train=4, seed=1, n_bootstrap=100))
    c = evaluate(images, x, EvalContext(n_train=4, seed=2, n_bootstrap=100))
    assert a.n_train_actual == 4
    assert all(t["n_train"] == 4 for t in a.sub_scores["task"].values())
    assert all(t["params"] == {"svc__kernel": "linear", "svc__C": 1.0} for t in a.sub_scores["task"].values())
    assert np.array_equal(a.example_scores, b.example_scores) and (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert not np.array_equal(a.example_scores, c.example_scores)


def test_n_train_above_available_uses_all(newt_dir):
    images = newt.read(cfg(data=newt_dir, tasks=["ml_tag_nest"]))
    report = evaluate(images, random_features(images), EvalContext(n_train=500, n_bootstrap=50))
    assert report.n_train_actual == 20


def test_a_task_sample_does_not_depend_on_other_tasks(newt_dir):
    one = newt.read(cfg(data=newt_dir, tasks=["ml_tag_nest"]))
    two = newt.read(cfg(data=newt_dir, tasks=["ml_tag_nest", "ml_age_bald_eagle"]))
    r1 = evaluate(one, random_features(one), EvalContext(n_train=6, seed=5, n_bootstrap=50))
    x2 = np.zeros((len(two.images), 16), dtype=np.float32)
    rows = {i: k for k, i in enumerate(two.images.ids)}
    x2[[rows[i] for i in one.images.ids]] = random_features(one)
    x2[np.all(x2 == 0, axis=1)] = random_features(two, seed=9)[np.all(x2 == 0, axis=1)]
    r2 = evaluate(two, x2, EvalContext(n_train=6, seed=5, n_bootstrap=50))
    nest = [s for s, inf in zip(r2.example_scores, r2.example_info) if inf["task"] == "ml_tag_nest"]
    assert np.array_equal(r1.example_scores, nest)
