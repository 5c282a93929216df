"""iNat21: the fixture's layout, kingdoms from folder names, bad folders, the ridge protocol against scikit-learn."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.routes import probe as probe_route
from biobench.tasks import get_task, inat21
from tests.ridge_seed import pixel_features, seed_search


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inat21") / "data"
    inat21.make_fixture(d, seed=0)
    return d


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def test_fixture_is_the_real_layout(data):
    assert sorted(p.name for p in data.iterdir()) == ["train_mini", "train_mini.json", "val", "val.json"]
    for split, n in (("train_mini", inat21.N_TRAIN), ("val", inat21.N_VAL)):
        assert sorted(p.name for p in (data / split).iterdir()) == list(inat21.FIXTURE_CLASSES)
        assert all(len(list((data / split / c).glob("*.jpg"))) == n for c in inat21.FIXTURE_CLASSES)


def test_read_labels_splits_and_kingdoms(data):
    ex = inat21.read(inat21.Options(data=data))
    assert list(ex.names("")) == sorted(inat21.FIXTURE_CLASSES) and ex.info == ("kingdom",)
    for row in ex.table.iter_rows(named=True):
        folder, cls, _ = row["id"].split("/")
        assert ex.names("")[row["label"]] == cls
        assert row["split"] == {"train_mini": "train", "val": "test"}[folder]
        assert row["kingdom"] == cls.split("_")[1]
    assert set(ex.table["kingdom"]) == {"Animalia", "Fungi", "Plantae"}
    assert inat21.kingdom("00000_Animalia_x_y") == "Animalia" and inat21.kingdom("oddname") == ""


def test_missing_split_folder_names_it(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.rmtree(d / "val")
    with pytest.raises(DataError, match=r"val.*biobench download inat21"):
        inat21.read(inat21.Options(data=d))


def test_empty_class_folder_names_it_and_stray_files_are_ignored(data, tmp_path):
    d = copy(data, tmp_path)
    (d / "train_mini" / "LICENSE.txt").write_text("cc-by")
    (d / "val" / inat21.FIXTURE_CLASSES[0] / "notes.txt").write_text("x")
    assert inat21.read(inat21.Options(data=d)).table.height == inat21.read(inat21.Options(data=data)).table.height
    (d / "val" / "04000_Animalia_Chordata_Mammalia_x_y_z").mkdir()
    with pytest.raises(DataError, match="04000_Animalia_Chordata_Mammalia_x_y_z.*holds no images"):
        inat21.read(inat21.Options(data=d))


def test_protocol_matches_the_seed_pipeline_and_breaks_down_by_kingdom(data, tmp_path):
    """The seed's StandardScaler + RidgeClassifier, alpha by 5-fold CV accuracy over 2 ** arange(-15, 5)."""

    spec = get_task("inat21")
    assert spec.probe.class_weight is None and spec.probe.scoring == "accuracy" and spec.probe.log2_alpha == (-15, 5)
    options = inat21.Options(data=data)
    ex = inat21.read(options)
    x = pixel_features(ex, tmp_path / "cache")
    report = probe_route.evaluate(spec, options, ex, x, EvalContext(seed=0, n_bootstrap=100))
    y, split = ex.table["label"].to_numpy(), ex.table["split"].to_numpy()
    clf = seed_search(x[split == "train"], y[split == "train"])
    assert report.score == pytest.approx(np.mean(clf.predict(x[split == "test"]) == y[split == "test"]))
    assert report.sub_scores["probe"]["params"]["alpha"] == clf.best_params_["ridgeclassifier__alpha"]
    assert set(report.sub_scores["kingdom"]) == {"Animalia", "Fungi", "Plantae"}
    assert report.sub_scores["kingdom"]["Animalia"]["n_test"] == 3 * inat21.N_VAL
    small = probe_route.evaluate(spec, options, ex, x, EvalContext(n_train=12, seed=1, n_bootstrap=20))
    assert small.n_train_actual == 12  # 2 per class, seeded and class-balanced


def test_resources_are_the_published_archives_with_md5s():
    names = {r.filename: r for r in inat21.RESOURCES}
    assert set(names) == {"train_mini.tar.gz", "val.tar.gz", "train_mini.json.tar.gz", "val.json.tar.gz"}
    assert all(r.md5 and len(r.md5) == 32 and r.url.startswith("https://ml-inat-competition-datasets") for r in inat21.RESOURCES)
