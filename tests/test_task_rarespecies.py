"""Rare Species: three layouts read alike, seeded k-shot splits, SimpleShot against scikit-learn, bad inputs named."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import normalize

from biobench.errors import DataError
from biobench.probes import SimpleShot
from biobench.tasks import get_task, rarespecies


def read(root, **kw):
    return rarespecies.read(rarespecies.Options(root, **kw))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("rarespecies")
    for layout in ("saved", "parquet", "folders"):
        rarespecies.make_fixture(root / layout, seed=2, layout=layout)
    return root


def test_the_three_layouts_give_the_same_examples(layouts):
    saved, hub, folders = (read(layouts / name, k=5) for name in ("saved", "parquet", "folders"))
    assert saved.table.equals(hub.table) and saved.table.equals(folders.table)
    assert saved.classnames == hub.classnames == folders.classnames
    names = saved.classnames[""]
    assert len(names) == 6 and names[0] == "Animalia Arthropoda Insecta Hymenoptera Formicidae Pheidole elecebra"
    assert saved.images.paths[0].column == "image" and hub.images.paths[0].column == "file_name"
    assert np.array_equal(saved.images.keys("content"), hub.images.keys("content"))


@pytest.mark.parametrize("k", [1, 5])
def test_k_of_every_species_train_and_the_rest_test_seeded(layouts, k):
    ex = read(layouts / "saved", k=k)
    t = ex.table
    assert t.filter(split="train").group_by("label").len()["len"].to_list() == [k] * 6
    assert t.filter(split="test").height == 6 * (rarespecies.N_PER_SPECIES - k)
    assert read(layouts / "saved", k=k).table.equals(t)
    other = read(layouts / "saved", k=k, split_seed=1).table
    assert not other["split"].equals(t["split"]) and other["label"].equals(t["label"])


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # its shrinkage statistics, unused here
def test_simpleshot_matches_scikit_learns_nearest_centroid_on_centred_normalised_features():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)) + np.repeat(rng.normal(size=(6, 8)), 10, axis=0), np.repeat(np.arange(6), 10)
    train = np.zeros(60, dtype=bool)
    train[np.arange(0, 60, 10)] = True  # one shot per class
    got = SimpleShot()(x[train], y[train], x[~train], seed=0).labels
    mean = x[train].mean(axis=0)
    ref = NearestCentroid().fit(normalize(x[train] - mean), y[train]).predict(normalize(x[~train] - mean))
    assert np.array_equal(got, ref)
    spec = get_task("rarespecies")
    assert isinstance(spec.probe, SimpleShot) and not spec.uses_n_train and spec.metric.name == "accuracy"


def rewrite_first_shard(root, change):
    shard = sorted((root / "data").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), shard)


def test_an_empty_rank_is_named(tmp_path):
    rarespecies.make_fixture(tmp_path, layout="parquet")
    rewrite_first_shard(tmp_path, lambda t: t.set_column(t.schema.get_field_index("genus"), "genus", pa.array([None] + t.column("genus").to_pylist()[1:], pa.string())))  # fmt: skip
    with pytest.raises(DataError, match="genus must be filled in"):
        read(tmp_path)


def test_a_repeated_id_is_named(tmp_path):
    rarespecies.make_fixture(tmp_path, layout="parquet")
    i = None

    def repeat(t):
        nonlocal i
        ids = t.column(rarespecies.ID).to_pylist()
        i, ids[1] = ids[0], ids[0]
        return t.set_column(t.schema.get_field_index(rarespecies.ID), rarespecies.ID, pa.array(ids))

    rewrite_first_shard(tmp_path, repeat)
    with pytest.raises(DataError, match=f"rarespecies_id '{i}' appears 2 times"):
        read(tmp_path)


def test_a_shard_without_a_rank_is_named(tmp_path):
    rarespecies.make_fixture(tmp_path, layout="parquet")
    rewrite_first_shard(tmp_path, lambda t: t.drop(["family"]))
    with pytest.raises(DataError, match="train-00000-of-00002.parquet lacks column.*family"):
        read(tmp_path)


def test_folder_layout_with_a_missing_image_is_named(tmp_path):
    rarespecies.make_fixture(tmp_path, layout="folders")
    first = pl.read_csv(tmp_path / "metadata.csv")["file_name"][0]
    (tmp_path / first).unlink()
    with pytest.raises(DataError, match=r"(?s)1 of 42 images listed in .*metadata.csv are missing.*line 2"):
        read(tmp_path)


def test_k_below_one_is_an_error(tmp_path):
    with pytest.raises(DataError, match="k must be at least 1"):
        read(tmp_path, k=0)


def test_download_prints_the_steps(tmp_path):
    with pytest.raises(DataError) as info:
        get_task("rarespecies").fetch(tmp_path)
    text = str(info.value)
    assert f"huggingface-cli download imageomics/rare-species --repo-type dataset --local-dir {tmp_path}" in text
    assert "public" in text and f"{tmp_path}/data/train-*.parquet" in text
