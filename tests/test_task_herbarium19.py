"""Herbarium19: the fixture's layout, ids unique across categories, one class index, bad folders, the spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biobench.errors import DataError
from biobench.metrics import MACRO_F1
from biobench.probes import Linear
from biobench.tasks import get_task, herbarium19


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("herbarium19") / "data"
    herbarium19.make_fixture(d, seed=0)
    return d


def copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def test_fixture_is_the_real_layout_with_ids_repeating_across_categories(data):
    assert sorted(p.name for p in data.iterdir()) == ["train", "validation"]
    for split in ("train", "validation"):
        assert {p.name for p in (data / split).iterdir()} == set(herbarium19.FIXTURE_CATEGORIES)
        assert all((data / split / c / "00000.jpg").is_file() for c in herbarium19.FIXTURE_CATEGORIES)
    ex = herbarium19.read(herbarium19.Options(data=data))
    assert ex.table["id"].n_unique() == ex.table.height
    assert "train/1/00000.jpg" in ex.table["id"].to_list() and "validation/10/00000.jpg" in ex.table["id"].to_list()


def test_categories_share_one_index_and_validation_tests(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.copytree(d / "validation" / "1", d / "validation" / "5")  # a category only in validation, sorting mid-list
    ex = herbarium19.read(herbarium19.Options(data=d))
    names = ex.classnames[""]
    assert list(names) == sorted(set(herbarium19.FIXTURE_CATEGORIES) | {"5"})  # string order: "10" before "2"
    for row in ex.table.iter_rows(named=True):
        folder, category, _ = row["id"].split("/")
        assert names[row["label"]] == category and row["split"] == {"train": "train", "validation": "test"}[folder]


def test_metadata_and_stray_files_are_ignored(data, tmp_path):
    d = copy(data, tmp_path)
    (d / "train" / "metadata.json").write_text("{}")
    (d / "validation" / "0" / "notes.txt").write_text("x")
    assert herbarium19.read(herbarium19.Options(data=d)).table.height == herbarium19.read(herbarium19.Options(data=data)).table.height


def test_empty_category_folder_is_an_error_naming_it(data, tmp_path):
    d = copy(data, tmp_path)
    (d / "train" / "682").mkdir()
    with pytest.raises(DataError, match=r"train/682.*holds no images"):
        herbarium19.read(herbarium19.Options(data=d))


def test_missing_validation_folder_names_it(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.rmtree(d / "validation")
    with pytest.raises(DataError, match=r"validation.*biobench download herbarium19"):
        herbarium19.read(herbarium19.Options(data=d))


def test_split_without_category_folders_is_an_error(data, tmp_path):
    d = copy(data, tmp_path)
    shutil.rmtree(d / "validation")
    (d / "validation").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        herbarium19.read(herbarium19.Options(data=d))


def test_spec_is_the_anchor_linear_probe_and_macro_f1():
    spec = get_task("herbarium19")
    assert spec is herbarium19.SPEC and spec.metric is MACRO_F1 and spec.metric.resample == "stratified"
    probe = spec.probe_for(herbarium19.Options(data=Path(".")))
    assert probe == Linear(steps=10_000, batch_size=2048, lr=3e-4, weight_decay=1e-2)
    assert spec.probe_for(herbarium19.Options(data=Path("."), steps=50)).steps == 50
    assert {r.md5 for r in spec.resources} == {"53c6b9ee2f831f5101dbe00958091dc8", "2f854d580949e54f114993a74adc3d4b"}
