"""Pl@ntNet: the fixture's layout, species names, the test-split option, bad inputs, the download hook, the protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.routes import probe as probe_route
from biobench.tasks import get_task, plantnet
from tests.ridge_seed import pixel_features, seed_search


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plantnet") / "data"
    plantnet.make_fixture(d, seed=0)
    return d


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def test_fixture_layout_and_long_tail(data):
    assert sorted(p.name for p in (data / "images").iterdir()) == ["test", "train", "val"]
    sizes = [len(list((data / "images" / "train" / s).glob("*.jpg"))) for s in plantnet.FIXTURE_SPECIES]
    assert sizes == list(plantnet.TRAIN_SIZES)


def test_species_names_from_the_json_and_ids_without_it(data, tmp_path):
    ex = plantnet.read(plantnet.Options(data=data))
    ids = sorted(plantnet.FIXTURE_SPECIES)
    assert list(ex.names("")) == [plantnet.FIXTURE_SPECIES[i] for i in ids]
    for row in ex.table.iter_rows(named=True):
        assert row["id"].split("/")[2] == ids[row["label"]]
    d = copy(data, tmp_path)
    (d / plantnet.SPECIES_NAMES).unlink()
    assert list(plantnet.read(plantnet.Options(data=d)).names("")) == ids


def test_test_split_option_scores_the_held_out_images(data):
    val = plantnet.read(plantnet.Options(data=data))
    test = plantnet.read(plantnet.Options(data=data, test_split="test"))
    assert {i.split("/")[1] for i in val.table.filter(val.table["split"] == "test")["id"]} == {"val"}
    assert {i.split("/")[1] for i in test.table.filter(test.table["split"] == "test")["id"]} == {"test"}
    assert test.table.filter(test.table["split"] == "test").height == 10


def test_bad_inputs_are_named(data, tmp_path):
    d = copy(data, tmp_path)
    (d / plantnet.SPECIES_NAMES).write_text("{not json")
    with pytest.raises(DataError, match=plantnet.SPECIES_NAMES):
        plantnet.read(plantnet.Options(data=d))
    (d / plantnet.SPECIES_NAMES).unlink()
    (d / "images" / "val" / "1400000").mkdir()
    with pytest.raises(DataError, match="1400000.*holds no images"):
        plantnet.read(plantnet.Options(data=d))
    shutil.rmtree(d / "images" / "val")
    with pytest.raises(DataError, match=r"images/val.*biobench download plantnet"):
        plantnet.read(plantnet.Options(data=d))


def test_download_hook_lifts_the_zip_folder(data, tmp_path):
    root = tmp_path / "dl"
    shutil.copytree(data, root / plantnet.UNPACKED)
    (root / "images").mkdir()  # an old partial copy is replaced
    plantnet.place_download(root)
    assert sorted(p.name for p in root.iterdir()) == ["images", plantnet.SPECIES_NAMES]
    plantnet.place_download(root)  # already in place: nothing to do
    for member in plantnet.RESOURCES[0].members:
        assert any(root.glob(member))
    assert plantnet.read(plantnet.Options(data=root)).table.height == plantnet.read(plantnet.Options(data=data)).table.height


def test_protocol_matches_the_seed_pipeline(data, tmp_path):
    """Balanced ridge, alpha by 5-fold CV macro-F1 over 2 ** arange(-15, 11); headline mean per-class accuracy."""
    import sklearn.metrics

    spec = get_task("plantnet")
    assert spec.metric.name == "mean_per_class_accuracy" and spec.metric.resample == "stratified"
    options = plantnet.Options(data=data)
    ex = plantnet.read(options)
    x = pixel_features(ex, tmp_path / "cache")
    report = probe_route.evaluate(spec, options, ex, x, EvalContext(seed=0, n_bootstrap=100))
    y, split = ex.table["label"].to_numpy(), ex.table["split"].to_numpy()
    clf = seed_search(x[split == "train"], y[split == "train"], log2_alpha=(-15, 11), class_weight="balanced", scoring="f1_macro")
    pred = clf.predict(x[split == "test"])
    assert report.sub_scores["probe"]["params"]["alpha"] == clf.best_params_["ridgeclassifier__alpha"]
    assert report.score == pytest.approx(sklearn.metrics.balanced_accuracy_score(y[split == "test"], pred))
    assert report.ci_low <= report.score <= report.ci_high
