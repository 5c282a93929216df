"""Plankton: the fixture's format, one class index over both splits, grayscale -> RGB, bad folders, the ridge protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.images import load_rgb
from biobench.routes import probe as probe_route
from biobench.tasks import get_task, plankton


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The generated dataset, written once; tests that change it copy it first."""
    d = tmp_path_factory.mktemp("plankton") / "data"
    plankton.make_fixture(d, seed=0)
    return d


@pytest.fixture(scope="module")
def feats(data, tmp_path_factory) -> np.ndarray:
    """pixel-stats features of the fixture's images, in `read`'s order."""
    ex = plankton.read(plankton.Options(data=data))
    backbone = load_vision_backbone("builtin", "pixel-stats")
    cache = FeatureCache(tmp_path_factory.mktemp("plankton-cache"))
    return get_features(backbone, ex.images, cache, EmbedSettings("cpu", 64, 0, "stat")).features


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def test_fixture_is_the_real_layout(data):
    assert sorted(p.name for p in data.iterdir()) == ["train", "val"]
    train = {p.name for p in (data / "train").iterdir()}
    val = {p.name for p in (data / "val").iterdir()}
    assert train == set(plankton.FIXTURE_CLASSES)
    assert val == train | {plankton.VAL_ONLY}
    pngs = sorted(data.glob("*/*/*.png"))
    assert len(pngs) == len(list(data.rglob("*"))) - len(train) - len(val) - 2  # nothing but class folders of PNGs
    for path in pngs[:: max(1, len(pngs) // 10)]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "L"  # single-channel, as the IFCB images


def test_one_class_index_from_the_union_of_both_splits(data):
    ex = plankton.read(plankton.Options(data=data))
    names = ex.classnames[""]
    assert list(names) == sorted(set(plankton.FIXTURE_CLASSES) | {plankton.VAL_ONLY})
    # The val-only class sorts in the middle, so indexing each split's folders alone would shift later classes in val.
    assert names.index(plankton.VAL_ONLY) not in (0, len(names) - 1)
    t = ex.table
    for row in t.iter_rows(named=True):
        folder, cls, _ = row["id"].split("/")
        assert names[row["label"]] == cls
        assert row["split"] == {"train": "train", "val": "test"}[folder]
    val_only = names.index(plankton.VAL_ONLY)
    assert set(t.filter(t["label"] == val_only)["split"]) == {"test"}
    for c in plankton.FIXTURE_CLASSES:  # the same name has the same index in both splits
        assert set(t.filter(t["id"].str.contains(f"/{c}/"))["label"]) == {names.index(c)}


def test_grayscale_images_load_as_rgb(data, feats):
    path = next((data / "val" / plankton.VAL_ONLY).glob("*.png"))
    img = load_rgb(path)
    assert img.mode == "RGB"
    a = np.asarray(img)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    assert np.array_equal(a[..., 0], np.asarray(Image.open(path)))
    # Through the embedding path too: pixel-stats' three 16-bin channel histograms are identical.
    f = feats
    assert np.allclose(f[:, 0:16], f[:, 16:32]) and np.allclose(f[:, 16:32], f[:, 32:48])


def test_empty_class_folder_names_the_folder(data, tmp_path):
    d = copy(data, tmp_path)
    empty = d / "val" / "Prorocentrum_cordatum"
    empty.mkdir()
    (empty / "notes.pdf").write_bytes(b"%PDF-1.4")  # a non-image file does not make it a class
    with pytest.raises(DataError, match="Prorocentrum_cordatum") as err:
        plankton.read(plankton.Options(data=d))
    assert "holds no images" in str(err.value)


def test_missing_split_folder_names_it(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.rmtree(d / "val")
    with pytest.raises(DataError, match=r"val.*biobench download plankton"):
        plankton.read(plankton.Options(data=d))


def test_stray_files_are_ignored(data, tmp_path):
    d = copy(data, tmp_path)
    (d / "train" / "README.pdf").write_bytes(b"%PDF-1.4")
    (d / "train" / plankton.FIXTURE_CLASSES[0] / "protocol.pdf").write_bytes(b"%PDF-1.4")
    ex = plankton.read(plankton.Options(data=d))
    assert ex.table.height == plankton.read(plankton.Options(data=data)).table.height
    assert "README.pdf" not in ex.classnames[""]


def test_spec_is_balanced_ridge_on_the_wide_alpha_grid():
    spec = get_task("plankton")
    assert spec is plankton.SPEC
    assert spec.probe.class_weight == "balanced" and spec.probe.standardize
    assert spec.probe.log2_alpha == (-15, 11)  # the seed's 2 ** arange(-15, 11), not ImageNet's (-15, 5)
    assert spec.metric.name == "accuracy" and spec.preprocess == ()


def seed_pipeline(x: np.ndarray, y: np.ndarray):
    """The seed's classifier: GridSearchCV(StandardScaler + RidgeClassifier(balanced), alpha in 2 ** arange(-15, 11))."""
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing

    ridge = sklearn.linear_model.RidgeClassifier(class_weight="balanced")
    pipe = sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), ridge)
    return sklearn.model_selection.GridSearchCV(pipe, {"ridgeclassifier__alpha": np.power(2.0, np.arange(-15, 11))}).fit(x, y)


def test_matches_the_original_scikit_learn_pipeline(data, feats):
    """The seed's GridSearchCV(StandardScaler + RidgeClassifier(balanced), 2 ** arange(-15, 11)) on train, scored on val."""
    options = plankton.Options(data=data)
    ex = plankton.read(options)
    x = np.asarray(feats, dtype=np.float64)
    report = probe_route.evaluate(plankton.SPEC, options, ex, x, EvalContext(n_train=-1, seed=0, n_bootstrap=100))

    y, split = ex.table["label"].to_numpy(), ex.table["split"].to_numpy()
    train, test = split == "train", split == "test"
    clf = seed_pipeline(x[train], y[train])
    expected = float(np.mean(clf.predict(x[test]) == y[test]))
    assert report.n_test == int(test.sum())  # every val image is scored, the val-only class included
    assert report.score == pytest.approx(expected)
    assert report.sub_scores["probe"]["params"]["alpha"] == clf.best_params_["ridgeclassifier__alpha"]
    assert report.score <= 1 - 4 / test.sum() + 1e-9  # the val-only class's 4 images can never be right


def test_wide_grid_and_class_weights_change_the_answer():
    """Imbalanced, noisy, wide features: CV picks an alpha above ImageNet's grid, and balancing moves predictions."""
    from biobench.probes import Ridge

    rng = np.random.default_rng(2)
    centres = rng.normal(0, 0.15, (3, 300))
    y, y_test = np.repeat(np.arange(3), [36, 16, 8]), np.repeat(np.arange(3), 20)
    x, x_test = centres[y] + rng.normal(0, 1, (60, 300)), centres[y_test] + rng.normal(0, 1, (60, 300))
    ours = plankton.SPEC.probe(x, y, x_test, seed=0)
    clf = seed_pipeline(x, y)
    assert ours.params["alpha"] == clf.best_params_["ridgeclassifier__alpha"] >= 2.0**5  # outside 2 ** arange(-15, 5)
    assert np.array_equal(ours.labels, clf.predict(x_test))
    narrow = Ridge(class_weight="balanced")(x, y, x_test, seed=0)
    unbalanced = Ridge(log2_alpha=(-15, 11))(x, y, x_test, seed=0)
    assert not np.array_equal(ours.labels, narrow.labels) and not np.array_equal(ours.labels, unbalanced.labels)


def test_download_hook_renames_the_unpacked_folders(data, tmp_path):
    root = tmp_path / "dl"
    root.mkdir()
    shutil.copytree(data / "train", root / "labeled_20201020")
    shutil.copytree(data / "val", root / "phytoplankton_Utö_2021_labeled")
    plankton.place_download(root)
    assert sorted(p.name for p in root.iterdir()) == ["train", "val"]
    for r in plankton.RESOURCES:  # members are checked after the hook, on the final layout
        assert any(root.glob(r.members[0])), r.members
    plankton.place_download(root)  # in place already: nothing to do
    ex = plankton.read(plankton.Options(data=root))
    assert ex.table.height == plankton.read(plankton.Options(data=data)).table.height


def test_download_hook_says_what_is_missing(tmp_path):
    (tmp_path / "labeled_20201020").mkdir()
    with pytest.raises(DataError, match=r"val.*phytoplankton_Ut\*_2021_labeled"):
        plankton.place_download(tmp_path)
