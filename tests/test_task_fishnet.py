"""FishNet: the real CSV layout, its bad inputs, the 9-hot labels and the per-trait metric."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.tasks import fishnet


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fishnet")
    fishnet.make_fixture(d, seed=0)
    return d


@pytest.fixture
def data(fixture_dir, tmp_path) -> Path:
    """A private copy to edit."""
    return Path(shutil.copytree(fixture_dir, tmp_path / "fishnet"))


def load(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def save(df: pl.DataFrame, path: Path) -> None:
    df.write_csv(path)


def test_fixture_is_in_the_real_layout(fixture_dir):
    for split in ("train.csv", "test.csv"):
        df = load(fixture_dir / split)
        # The real files are pandas dumps: an unnamed index column first, traits after Folder and Troph.
        assert df.columns[:4] == ["", "Unnamed: 0", "species", "image"]
        assert df.columns[12:23] == ["Folder", "Troph", *fishnet.TRAITS]
        assert set(df["FeedingPath"].drop_nulls()) == {"pelagic", "benthic"}
        assert set(df["Tropical"].drop_nulls()) == {"0", "1"}
        assert all((fixture_dir / "Image_Library" / f / i).is_file() for f, i in zip(df["Folder"], df["image"]))
    ex = fishnet.read(fishnet.Options(data=fixture_dir))
    assert ex.labels().shape == (ex.table.height, 9)
    assert isinstance(ex.table["label"].dtype, pl.List)
    assert tuple(ex.names("")) == fishnet.TRAITS
    assert set(ex.table["split"]) == {"train", "test"}


def test_missing_trait_column_names_file_and_column(data):
    save(load(data / "test.csv").drop("brackish"), data / "test.csv")
    with pytest.raises(DataError, match=r"test\.csv.*'brackish'"):
        fishnet.read(fishnet.Options(data=data))


def test_rows_with_empty_traits_are_dropped_and_counted(data, caplog):
    cfg = fishnet.Options(data=data)
    kept, dropped = fishnet.read_split(cfg, "train")
    assert dropped == 2  # the fixture's two rows with an empty trait
    df = load(data / "train.csv")
    gone = df["image"][10]
    save(df.with_columns(saltwater=pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col("saltwater"))), data / "train.csv")
    with caplog.at_level(logging.INFO):
        kept2, dropped2 = fishnet.read_split(cfg, "train")
    assert dropped2 == 3 and kept2.height == kept.height - 1
    assert "dropped 3 of 160 rows" in caplog.text and "train.csv" in caplog.text
    ex = fishnet.read(cfg)
    assert not any(i.endswith(gone) for i in ex.table["id"])
    assert ex.table.height == 160 + 80 - 3 - 2
    assert ex.skipped == {"empty trait": 3 + 2}


def test_missing_image_names_file_and_row(data):
    df = load(data / "test.csv")
    (data / "Image_Library" / df["Folder"][5] / df["image"][5]).unlink()
    with pytest.raises(DataError, match=rf"test\.csv(.|\n)*line 7 \({df['Folder'][5]}/{df['image'][5]}\)"):
        fishnet.read(fishnet.Options(data=data))


def test_feeding_path_is_pelagic_one_benthic_zero(data):
    df = load(data / "train.csv")
    # Upper case, stray spaces, and pandas' 1.0 for integer columns that held NaN all read as the CSV means them.
    df = df.with_columns(FeedingPath=pl.Series(["Pelagic ", "benthic"] * (df.height // 2)), Tropical=pl.lit("1.0"))
    save(df, data / "train.csv")
    ex = fishnet.read(fishnet.Options(data=data))
    labels = ex.labels()
    train = ex.table["split"].to_numpy() == "train"
    kept = df.filter(pl.col("Polar").is_not_null())  # the fixture's first two rows have an empty trait
    assert kept.height == train.sum()
    np.testing.assert_array_equal(labels[train, 0], (kept["FeedingPath"] == "Pelagic ").cast(int).to_numpy())
    assert labels[train, 1].tolist() == [1] * train.sum()


def test_unknown_feeding_path_names_file_line_and_value(data):
    df = load(data / "test.csv")
    save(df.with_columns(FeedingPath=pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("demersal")).otherwise(pl.col("FeedingPath"))),
         data / "test.csv")  # fmt: skip
    with pytest.raises(DataError, match=r"test\.csv line 6: FeedingPath must be 'pelagic' or 'benthic', got 'demersal'"):
        fishnet.read(fishnet.Options(data=data))


def test_image_listed_twice_is_an_error(data):
    train, test = load(data / "train.csv"), load(data / "test.csv")
    save(pl.concat([test, train[5:6]]), data / "test.csv")
    with pytest.raises(DataError, match=rf"{train['image'][5]} is listed more than once \(train\.csv line 7, test\.csv line 82\)"):
        fishnet.read(fishnet.Options(data=data))


@pytest.fixture
def one_thread():
    """Tiny torch steps on a busy machine are far faster on one thread (12 s -> 0.5 s for this MLP on 2 loaded cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_headline_is_the_mean_f1_of_all_nine_traits(fixture_dir, tmp_path, one_thread):
    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features
    from biobench.routes.probe import evaluate

    cfg = fishnet.Options(data=fixture_dir)
    ex = fishnet.read(cfg)
    x = get_features(
        load_vision_backbone("builtin", "pixel-stats"), ex.images, FeatureCache(tmp_path / "c"), EmbedSettings("cpu", 64, 0, "stat")
    ).features
    report = evaluate(fishnet.SPEC, cfg, ex, x, EvalContext(n_train=-1, seed=0, n_bootstrap=100))
    per_trait = report.sub_scores["trait"]
    assert list(per_trait) == list(fishnet.TRAITS)
    f1 = [per_trait[t]["f1"] for t in fishnet.TRAITS]
    # The seed's f1_score(labels=np.unique(y_true)) averaged only traits 0 and 1.
    assert report.score == pytest.approx(np.mean(f1))
    assert report.score != pytest.approx(np.mean(f1[:2]))
    assert report.metric == "mean_f1" and report.n_train_actual == 158
    test = ex.table.filter(pl.col("split") == "test")
    assert per_trait["FeedingPath"]["positive_rate"] == pytest.approx(ex.labels(test)[:, 0].mean())
    assert report.example_info[0]["score"] and len(report.example_info[0]["pred"]) == 9  # per-trait probabilities kept
