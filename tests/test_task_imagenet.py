"""ImageNet-1k: the Hub's parquet shards, a save_to_disk copy and an ImageFolder read alike; bad inputs named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biobench.errors import DataError
from biobench.images import TableImage, load_rgb
from biobench.probes import Ridge
from biobench.tasks import get_task, imagenet


def read(root):
    return imagenet.read(imagenet.Options(root))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for layout in ("parquet", "saved", "folders"):
        imagenet.make_fixture(root / layout, seed=3, layout=layout)
    return root


def test_the_three_layouts_give_the_same_examples(layouts):
    hub, saved, folders = (read(layouts / name) for name in ("parquet", "saved", "folders"))
    for ex in (hub, saved, folders):
        assert ex.table["split"].value_counts().sort("split").rows() == [("test", 30), ("train", 50)]
    # Labels: the dataset's ClassLabel indices, which are the sorted wnids' order an ImageFolder gives.
    assert hub.table["label"].to_list() == saved.table["label"].to_list()
    assert sorted(hub.table["label"].to_list()) == sorted(folders.table["label"].to_list())
    assert hub.classnames[""] == tuple(n for _, n in imagenet.FIXTURE_CLASSES)
    assert folders.classnames[""] == tuple(w for w, _ in imagenet.FIXTURE_CLASSES)
    assert hub.table.filter(split="test")["id"][0] == "validation/0"
    assert isinstance(hub.images.paths[0], TableImage) and hub.images.paths[0].file.suffix == ".parquet"
    assert isinstance(saved.images.paths[0], TableImage) and saved.images.paths[0].file.suffix == ".arrow"
    # the parquet and saved copies hold the same JPEG bytes
    assert np.array_equal(hub.images.keys("content"), saved.images.keys("content"))


def test_protocol_is_ridge_on_standardised_features_with_the_seed_grid():
    spec = get_task("imagenet")
    assert spec.probe == Ridge() and spec.probe.log2_alpha == (-15, 5) and spec.probe.standardize
    assert spec.uses_n_train and spec.metric.name == "accuracy" and spec.kind == "classification"


def test_a_label_outside_the_classes_is_named(tmp_path):
    imagenet.make_fixture(tmp_path)
    shard = tmp_path / "data" / "validation-00000-of-00001.parquet"
    table = pq.read_table(shard)
    labels = table.column("label").to_numpy().copy()
    labels[4] = -1  # the Hub's test split labels every image -1
    pq.write_table(table.set_column(1, "label", pa.array(labels)).replace_schema_metadata(table.schema.metadata), shard)
    with pytest.raises(DataError, match=r"validation-00000-of-00001.parquet row 4: label -1 is not a class 0..4"):
        read(tmp_path)


def test_a_shard_without_labels_is_named(tmp_path):
    imagenet.make_fixture(tmp_path)
    shard = tmp_path / "data" / "train-00001-of-00002.parquet"
    pq.write_table(pq.read_table(shard).drop(["label"]), shard)
    with pytest.raises(DataError, match="train-00001-of-00002.parquet lacks column.*label"):
        read(tmp_path)


def test_a_missing_validation_split_is_named(tmp_path):
    imagenet.make_fixture(tmp_path)
    for f in (tmp_path / "data").glob("validation-*"):
        f.unlink()
    with pytest.raises(DataError, match=r"validation not found.*biobench download imagenet"):
        read(tmp_path)


def test_an_empty_class_folder_is_named(tmp_path):
    imagenet.make_fixture(tmp_path, layout="folders")
    (tmp_path / "val" / "n09999999").mkdir()
    with pytest.raises(DataError, match="n09999999 holds no images"):
        read(tmp_path)


def test_corrupt_image_bytes_name_the_shard_and_row(tmp_path):
    imagenet.make_fixture(tmp_path)
    shard = tmp_path / "data" / "validation-00000-of-00001.parquet"
    table = pq.read_table(shard)
    rows = table.column("image").to_pylist()
    rows[2]["bytes"] = rows[2]["bytes"][:100]  # a truncated JPEG
    pq.write_table(table.set_column(0, "image", pa.array(rows, table.schema.field("image").type)), shard)
    ref = read(tmp_path).images.paths[50 + 2]
    assert ref == TableImage(shard, 2, "image")
    with pytest.raises(DataError, match=r"validation-00000-of-00001.parquet \(row 2, column image\)"):
        load_rgb(ref)


def test_download_prints_the_login_steps_and_the_layout(tmp_path):
    with pytest.raises(DataError) as info:
        get_task("imagenet").fetch(tmp_path)
    text = str(info.value)
    assert "huggingface-cli login" in text and "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in text
    assert f"huggingface-cli download ILSVRC/imagenet-1k --repo-type dataset --local-dir {tmp_path}" in text
    assert f"{tmp_path}/data/validation-*.parquet" in text and f"{tmp_path}/val/<wnid>" in text
