"""iWildCam: WILDS metadata.csv, splits used and left out, bad rows named, the protocol and its macro-F1."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.routes import probe as probe_route
from biobench.tasks import get_task, iwildcam
from tests.ridge_seed import pixel_features, seed_search


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("iwildcam") / "data"
    iwildcam.make_fixture(d, seed=0)
    return d


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def edit(d: Path, fn) -> None:
    """Rewrite metadata.csv through `fn` (a polars frame of strings -> frame)."""
    path = d / "metadata.csv"
    fn(pl.read_csv(path, infer_schema=False)).write_csv(path)


def test_train_and_ood_test_splits_other_splits_counted(data, caplog):
    meta = pl.read_csv(data / "metadata.csv")
    with caplog.at_level(logging.INFO, logger="biobench.tasks.iwildcam"):
        ex = iwildcam.read(iwildcam.Options(data=data))
    assert "5 of 63 rows" in caplog.text and "(val: 4, id_test: 1)" in caplog.text
    t = ex.table
    assert t.height == meta.filter(pl.col("split").is_in(["train", "test"])).height
    assert set(t.filter(t["split"] == "train")["location"]).isdisjoint(set(t.filter(t["split"] == "test")["location"]))
    assert set(t.filter(t["split"] == "test")["label"]) == {0, 36, 72, 101}  # 146 is seen in training only
    assert ex.names("")[146] == "cuniculus paca" and ex.names("")[1] == "1" and ex.info == ("location",)
    row = meta.filter(pl.col("split") == "test").row(0, named=True)
    assert t.filter(t["id"] == row["filename"])["label"].item() == row["y"]


def test_bad_rows_are_named_by_line(data, tmp_path):
    d = copy(data, tmp_path)
    edit(d, lambda df: df.with_columns(pl.when(pl.col("").cast(int) == 4).then(pl.lit("deer")).otherwise(pl.col("y")).alias("y")))
    with pytest.raises(DataError, match=r"metadata.csv line 6: y must be an integer, got 'deer'"):
        iwildcam.read(iwildcam.Options(data=d))
    d = copy(data, tmp_path / "b")
    edit(d, lambda df: df.with_columns(pl.when(pl.col("").cast(int) == 0).then(pl.lit("")).otherwise(pl.col("filename")).alias("filename")))
    with pytest.raises(DataError, match=r"line 2: filename must be filled in"):
        iwildcam.read(iwildcam.Options(data=d))
    d = copy(data, tmp_path / "c")
    gone = pl.read_csv(d / "metadata.csv").filter(pl.col("split") == "test")["filename"][0]
    (d / "train" / gone).unlink()
    with pytest.raises(DataError, match=rf"(?s)1 of 58 images.*line \d+ \({gone}\)"):
        iwildcam.read(iwildcam.Options(data=d))


def test_missing_file_and_missing_column_are_named(data, tmp_path):
    d = copy(data, tmp_path)
    edit(d, lambda df: df.drop("location"))
    with pytest.raises(DataError, match=r"metadata.csv lacks column\(s\) 'location'"):
        iwildcam.read(iwildcam.Options(data=d))
    (d / "metadata.csv").unlink()
    with pytest.raises(DataError, match=r"metadata.csv not found.*biobench download iwildcam"):
        iwildcam.read(iwildcam.Options(data=d))


def test_protocol_and_macro_f1_over_test_classes_match_the_seed(data, tmp_path):
    """Ridge (unweighted), alpha by 5-fold CV macro-F1 over 2 ** arange(-15, 5); f1_score(labels=np.unique(y_test))."""
    import sklearn.metrics

    spec = get_task("iwildcam")
    assert spec.probe.class_weight is None and spec.probe.scoring == "macro_f1" and spec.probe.log2_alpha == (-15, 5)
    options = iwildcam.Options(data=data)
    ex = iwildcam.read(options)
    x = pixel_features(ex, tmp_path / "cache")
    report = probe_route.evaluate(spec, options, ex, x, EvalContext(seed=0, n_bootstrap=100))
    y, split = ex.table["label"].to_numpy(), ex.table["split"].to_numpy()
    clf = seed_search(x[split == "train"], y[split == "train"], scoring="f1_macro")
    y_test, pred = y[split == "test"], clf.predict(x[split == "test"])
    assert report.sub_scores["probe"]["params"]["alpha"] == clf.best_params_["ridgeclassifier__alpha"]
    assert report.score == pytest.approx(sklearn.metrics.f1_score(y_test, pred, average="macro", labels=np.unique(y_test)))
    assert set(report.sub_scores["location"]) == {str(v) for v in ex.table.filter(ex.table["split"] == "test")["location"]}
