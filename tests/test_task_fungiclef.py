"""FungiCLEF 2023: layout, observation pooling, lower-cased files, bad inputs, and the challenge's metrics by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sklearn.metrics

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.probes import OpenSet, SimpleShot
from biobench.routes import probe as probe_route
from biobench.tasks import fungiclef, get_task

TRAIN_CSV, VAL_CSV = fungiclef.SPLITS["train"][0], fungiclef.SPLITS["test"][0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fungiclef") / "data"
    fungiclef.make_fixture(d, seed=0)
    return d


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def edit(path: Path, fn) -> None:
    fn(pl.read_csv(path, infer_schema=False)).write_csv(path)


def set_class(path: Path, row: int, value: str) -> None:
    """Set `class_id` of data row `row` (0-based) of the CSV at `path`."""
    edit(
        path, lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise("class_id").alias("class_id"))
    )


def test_train_images_are_examples_and_validation_observations_pool_their_images(data):
    ex = fungiclef.read(fungiclef.Options(data=data))
    assert ex.pool == "mean"
    val = pl.read_csv(data / VAL_CSV)
    t = ex.table
    train, test = t.filter(pl.col("split") == "train"), t.filter(pl.col("split") == "test")
    assert train["id"].n_unique() == train.height == pl.read_csv(data / TRAIN_CSV).height
    assert test["id"].n_unique() == val["observationID"].n_unique() < test.height  # some observations have 2 images
    assert set(test["label"]) == set(fungiclef.FIXTURE_CLASSES) | {-1} and -1 not in set(train["label"])
    names = [Path(p).name for p in ex.images.paths]
    assert any(n != n.lower() for n in names) and any(n == n.lower() for n in names)  # both found


def test_missing_image_is_an_error_naming_the_line(data, tmp_path):
    d = copy(data, tmp_path)
    name = pl.read_csv(d / VAL_CSV)["image_path"][3]
    for p in (d / "DF21_300").iterdir():
        if p.name.lower() == name.lower():
            p.unlink()
    with pytest.raises(DataError, match=rf"line 5 \({name}\)"):
        fungiclef.read(fungiclef.Options(data=d))


def test_missing_column_and_non_integer_class_are_errors(data, tmp_path):
    d = copy(data, tmp_path)
    set_class(d / TRAIN_CSV, 2, "x")
    with pytest.raises(DataError, match=rf"{TRAIN_CSV} line 4: class_id must be an integer"):
        fungiclef.read(fungiclef.Options(data=d))
    edit(d / TRAIN_CSV, lambda df: df.drop("class_id"))
    with pytest.raises(DataError, match="lacks column"):
        fungiclef.read(fungiclef.Options(data=d))


def test_unknown_class_in_training_is_an_error(data, tmp_path):
    d = copy(data, tmp_path)
    set_class(d / TRAIN_CSV, 0, "-1")
    with pytest.raises(DataError, match="line 2: class_id -1 is not a training class"):
        fungiclef.read(fungiclef.Options(data=d))


def test_observation_with_two_species_is_an_error(data, tmp_path):
    d = copy(data, tmp_path)
    val = pl.read_csv(d / VAL_CSV, infer_schema=False)
    obs = val.filter(pl.col("observationID").is_duplicated())["observationID"][0]
    first = val.with_row_index().filter(pl.col("observationID") == obs)["index"][0]
    set_class(d / VAL_CSV, first, "1234")
    with pytest.raises(DataError, match=f"observation {obs} has images of different class_id"):
        fungiclef.read(fungiclef.Options(data=d))


def test_poison_list_disagreeing_with_the_metric_is_an_error(data, tmp_path):
    d = copy(data, tmp_path)
    edit(d / fungiclef.POISON_CSV, lambda df: df.with_columns(poisonous=pl.lit("1")))
    with pytest.raises(DataError, match=r"class_id 0 poisonous = 1"):
        fungiclef.read(fungiclef.Options(data=d))
    (d / fungiclef.POISON_CSV).unlink()
    with pytest.raises(DataError, match="poison_status_list.csv not found"):
        fungiclef.read(fungiclef.Options(data=d))


def test_missing_image_folder_names_it(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.rmtree(d / "DF20_300")
    with pytest.raises(DataError, match="DF20_300 not found"):
        fungiclef.read(fungiclef.Options(data=d))


# The challenge's evaluate.py, restated on arrays (unknown = -1; POISONOUS as its poison_status_list.csv).
def challenge(y_true, y_pred):
    gt, pr = np.asarray(y_true), np.asarray(y_pred)
    poison = np.array(sorted(fungiclef.POISONOUS))
    other = ((gt != pr) & (pr != -1) & (gt != -1)).sum()
    unk_mis, mis_unk = ((gt == -1) & (pr != -1)).sum(), ((gt != -1) & (pr == -1)).sum()
    ce = (other + unk_mis + mis_unk) / len(gt)
    psc = (100 * (np.isin(gt, poison) & ~np.isin(pr, poison)).sum() + (~np.isin(gt, poison) & np.isin(pr, poison)).sum()) / len(gt)
    return {
        "f1_macro": sklearn.metrics.f1_score(gt, pr, average="macro"),
        "track1_classification_error": ce,
        "track2_poisonous_confusion_cost": psc,
        "track3_user_focused_loss": ce + psc,
        "track4_error_unknown_cost": (other + 10 * unk_mis + 0.1 * mis_unk) / len(gt),
    }


def test_metrics_match_the_challenge_definitions_and_a_hand_count():
    #             right  edible->poison  poison->edible  unknown->known  known->unknown  poison->unknown  unknown right
    y_true = np.array([0, 1, 20, -1, 2, 25, -1])
    y_pred = np.array([0, 35, 3, 4, -1, -1, -1])
    got = {name: fn(y_true, y_pred) for name, fn in fungiclef.TRACKS}
    assert got == pytest.approx(challenge(y_true, y_pred))
    assert got["track1_classification_error"] == pytest.approx(5 / 7)
    assert got["track2_poisonous_confusion_cost"] == pytest.approx((1 + 100 + 100) / 7)  # unknown->4 and 2->unknown: no cost
    assert got["track4_error_unknown_cost"] == pytest.approx((1 + 1 + 10 + 0.1 + 0.1) / 7)
    # worst case: 1 error each plus 100 per poisonous truth (20, 25) and 1 per other.
    loss, worst = 5 + 201, 7 + 2 * 100 + 5
    assert fungiclef.user_score(y_true, y_pred) == pytest.approx(1 - loss / worst)
    assert fungiclef.user_score(y_true, y_true) == 1.0
    assert fungiclef.user_score(np.array([20, 0]), np.array([0, 20])) == pytest.approx(0.0)


def test_bootstrap_replicates_normalise_each_resample():
    y_true, y_pred = np.array([20, 0, 1]), np.array([0, 0, 1])
    idx = np.array([[0, 0, 0], [1, 2, 1]])
    assert fungiclef.user_score(y_true, y_pred, idx).tolist() == pytest.approx([1 - 101 / 101, 1.0])


def test_route_scores_observations_with_the_user_score(data):
    ex = fungiclef.read(fungiclef.Options(data=data))
    rng = np.random.default_rng(0)
    labels = ex.table["label"].to_numpy()
    x = rng.normal(size=(len(ex.images), 4)) * 0.1 + np.eye(4)[labels % 4] * 3  # the unknown shares class 3's spot
    report = probe_route.evaluate(fungiclef.SPEC, fungiclef.Options(data=data), ex, x, EvalContext(n_bootstrap=50))
    assert report.metric == "user_score" and len(report.example_ids) == ex.table.filter(pl.col("split") == "test")["id"].n_unique()
    y, p = np.array([i["label"] for i in report.example_info]), np.array([i["pred"] for i in report.example_info])
    assert report.score == pytest.approx(fungiclef.user_score(y, p))
    assert report.sub_scores["metrics"] == pytest.approx(challenge(y, p))


def test_spec_is_open_set_simpleshot():
    spec = get_task("fungiclef")
    assert spec.probe == OpenSet(base=SimpleShot(), quantile=0.95, unknown=-1) and spec.metric.name == "user_score"
