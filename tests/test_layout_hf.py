"""Hugging Face datasets on disk: the save_to_disk and Hub-parquet layouts, and images kept inside their shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from biobench import fixtures, images
from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from biobench.images import ImageSet, TableImage, load_rgb
from biobench.layouts import hf
from biobench.sampling import k_per_class

FEATURES = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b", "c"]}}


def drawn(n=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return [fixtures.draw(rng, 7, int(c)) for c in labels], labels


@pytest.fixture
def both(tmp_path):
    """The same 12 images and labels as the Hub's parquet shards (3) and as a save_to_disk DatasetDict (2 shards)."""
    imgs, labels = drawn()
    table = fixtures.hf_table(imgs, [f"{i}.jpg" for i in range(len(imgs))], {"label": labels})
    fixtures.write_hf_parquet(table, tmp_path / "hub", "train", n_shards=3, features=FEATURES, row_group_size=2)
    fixtures.write_hf_saved({"train": table, "validation": table.slice(0, 3)}, tmp_path / "saved", n_shards=2, features=FEATURES)
    return tmp_path / "hub", tmp_path / "saved", imgs


def test_both_layouts_give_the_same_rows_images_and_class_names(both):
    hub, saved, imgs = both
    (a, rows_a), (b, rows_b) = (hf.read_split("t", d, "train", ["label"]) for d in (hub, saved))
    assert [f.suffix for f in a.files] == [".parquet"] * 3 and [f.suffix for f in b.files] == [".arrow"] * 2
    assert rows_a["label"].to_list() == rows_b["label"].to_list() == [i % 3 for i in range(12)]
    assert a.class_names("label") == b.class_names("label") == ("a", "b", "c")
    assert hf.image_column("t", a) == hf.image_column("t", b) == "image"
    set_a, set_b = (hf.table_images("t", r, "image", [str(i) for i in range(12)]) for r in (rows_a, rows_b))
    for ref_a, ref_b, img in zip(set_a.paths, set_b.paths, imgs):
        assert isinstance(ref_a, TableImage) and load_rgb(ref_a).tobytes() == load_rgb(ref_b).tobytes()
        assert load_rgb(ref_a).size == img.size
    # the same bytes in two layouts: one content key, two stat keys
    assert np.array_equal(set_a.keys("content"), set_b.keys("content"))
    assert not np.intersect1d(set_a.keys(), set_b.keys()).size and len(set(set_a.keys().tolist())) == 12
    assert hf.read_split("t", saved, "validation", ["label"])[1].height == 3


def test_a_shard_is_read_once_per_block_not_once_per_image(both):
    hub, saved, _ = both
    for data, blocks in ((hub, 6), (saved, 2)):  # parquet: 3 shards x 2 row groups of 2; Arrow: whole (mapped) files
        _, rows = hf.read_split("t", data, "train", ["label"])
        refs = hf.table_images("t", rows, "image", [str(i) for i in range(rows.height)]).paths
        images._table_block.cache_clear()
        for ref in refs:
            images.table_image_bytes(ref)
        assert images._table_block.cache_info().misses == blocks


def test_stat_key_changes_when_a_shard_is_rewritten(both):
    hub, _, _ = both
    _, rows = hf.read_split("t", hub, "train", ["label"])
    refs = hf.table_images("t", rows, "image", [str(i) for i in range(12)])
    before = refs.keys()
    shard = refs.paths[0].file
    pq.write_table(pq.read_table(shard), shard)
    after = refs.keys()
    changed = [r.file == shard for r in refs.paths]
    assert np.array_equal(before == after, ~np.array(changed))


def test_embedding_table_images_matches_the_same_images_as_files_and_caches(both, tmp_path):
    hub, _, imgs = both
    _, rows = hf.read_split("t", hub, "train", ["label"])
    in_table = hf.table_images("t", rows, "image", [str(i) for i in range(12)])
    files = []
    for i, img in enumerate(imgs):  # the very JPEG bytes the table holds
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(images.table_image_bytes(in_table.paths[i]))
    backbone = load_vision_backbone("builtin", "pixel-stats")
    cache = FeatureCache(tmp_path / "cache")
    for n_workers in (0, 2):
        settings = EmbedSettings(device="cpu", batch_size=5, n_workers=n_workers)
        got = get_features(backbone, in_table, FeatureCache(tmp_path / f"c{n_workers}"), settings)
        want = get_features(backbone, ImageSet("f", in_table.ids, files), cache, settings)
        assert got.n_embedded == 12 and np.allclose(got.features, want.features)
    again = get_features(backbone, in_table, FeatureCache(tmp_path / "c0"), EmbedSettings(device="cpu", n_workers=0))
    assert again.n_embedded == 0 and again.n_cached == 12


def test_a_struct_without_bytes_opens_its_path_relative_to_the_shard(tmp_path):
    Image.new("RGB", (9, 7), (10, 200, 30)).save(tmp_path / "x.png")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": "x.png"}, {"bytes": None, "path": None}], struct)}),
                   tmp_path / "train-00000-of-00001.parquet")  # fmt: skip
    assert load_rgb(TableImage(tmp_path / "train-00000-of-00001.parquet", 0)).size == (9, 7)
    with pytest.raises(DataError, match="row 1.*holds no image"):
        load_rgb(TableImage(tmp_path / "train-00000-of-00001.parquet", 1))


def test_corrupt_bytes_and_missing_rows_name_the_shard_and_row(tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    shard = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"not a jpeg", "path": "a.jpg"}], struct)}), shard)
    with pytest.raises(DataError, match=r"Cannot decode image .*train-00000-of-00001.parquet \(row 0"):
        load_rgb(TableImage(shard, 0))
    with pytest.raises(DataError, match="row 5 is not there"):
        load_rgb(TableImage(shard, 5))
    backbone = load_vision_backbone("builtin", "pixel-stats")
    with pytest.raises(DataError, match="row 0"):
        get_features(backbone, ImageSet("x", ["a"], [TableImage(shard, 0)]), FeatureCache(tmp_path / "c"), EmbedSettings(n_workers=0))
    with pytest.raises(DataError, match="missing"):
        ImageSet("x", ["a"], [TableImage(tmp_path / "gone.parquet", 0)]).keys()


def test_bad_layouts_are_named(both, tmp_path):
    hub, saved, _ = both
    with pytest.raises(DataError, match=r"biobench download t"):
        hf.read_split("t", hub, "validation", ["label"])
    with pytest.raises(DataError, match="lacks column.*species"):
        hf.read_split("t", hub, "train", ["label", "species"])
    (saved / "train" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataError, match="data-00001-of-00002.arrow"):
        hf.read_split("t", saved, "train", ["label"])
    (saved / "validation" / "data-00000-of-00002.arrow").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data-00000-of-00002.arrow.*damaged"):
        hf.read_split("t", saved, "validation", ["label"])
    (saved / "validation" / "state.json").write_text(json.dumps({"_data_files": []}))
    with pytest.raises(DataError, match="lists no shards"):
        hf.read_split("t", saved, "validation", ["label"])
    shard = sorted((hub / "data").glob("train-*.parquet"))[0]
    pq.write_table(pq.read_table(shard).drop(["image"]), shard)
    with pytest.raises(DataError, match="no image column"):
        hf.image_column("t", hf.find_split("t", hub, "train"))


def test_a_single_saved_dataset_and_the_hub_conversion_layout_are_found(tmp_path):
    imgs, labels = drawn(4)
    table = fixtures.hf_table(imgs, ["a", "b", "c", "d"], {"label": labels})
    fixtures.write_hf_saved({"train": table}, tmp_path / "d", n_shards=1, features=FEATURES)
    single = tmp_path / "d" / "train"  # save_to_disk of one Dataset: DIR/state.json, its split inside
    assert hf.find_split("t", single, "train").files == (single / "data-00000-of-00001.arrow",)
    (tmp_path / "conv" / "default" / "validation").mkdir(parents=True)
    pq.write_table(table, tmp_path / "conv" / "default" / "validation" / "0000.parquet")
    assert hf.read_split("t", tmp_path / "conv", "validation", ["label"])[1].height == 4
    assert hf.has_dataset(tmp_path / "conv") and not hf.has_dataset(tmp_path / "nothing")


def test_hub_steps_name_login_terms_and_the_download_command(tmp_path):
    gated = str(hf.hub_steps("imagenet", tmp_path, "ILSVRC/imagenet-1k", "  {dir}/data/*.parquet", gated=True))
    assert "huggingface-cli login" in gated and "accept its terms" in gated
    assert f"huggingface-cli download ILSVRC/imagenet-1k --repo-type dataset --local-dir {tmp_path}" in gated
    assert f"{tmp_path}/data/*.parquet" in gated
    assert "huggingface-cli login" not in str(hf.hub_steps("rarespecies", tmp_path, "imageomics/rare-species", "", gated=False))


def test_k_per_class_takes_k_of_every_class_seeded():
    labels = np.repeat(np.arange(5), [3, 7, 1, 7, 2])
    a = k_per_class(labels, 2, np.random.default_rng(0))
    assert np.bincount(labels[a]).tolist() == [2, 2, 1, 2, 2] and len(set(a)) == len(a)
    assert np.array_equal(a, k_per_class(labels, 2, np.random.default_rng(0)))
    draws = {tuple(sorted(k_per_class(labels, 2, np.random.default_rng(s)))) for s in range(10)}
    assert len(draws) > 1
