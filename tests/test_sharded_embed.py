"""Sharded feature extraction: shards embed disjoint parts of one image set into their own cache chunks."""

from __future__ import annotations

import os

import numpy as np
import pytest

from biobench import cache as cache_mod
from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, embed_shard, get_features, missing_shards, shard_rows
from tests.test_cache_embed import Counting, make_images

SETTINGS = EmbedSettings("cpu", batch_size=4, n_workers=0)


@pytest.fixture
def counting():
    Counting.calls = Counting.images = 0
    return load_vision_backbone("test-counting", "counting")


def test_shard_rows_partition_the_set():
    parts = [shard_rows(10, i, 3) for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        shard_rows(10, 3, 3)


def test_sharded_features_equal_unsharded(tmp_path, counting):
    images = make_images(tmp_path, 11)
    whole = get_features(counting, images, FeatureCache(tmp_path / "one"), SETTINGS).features
    sharded = FeatureCache(tmp_path / "three")
    assert missing_shards(counting, images, sharded, SETTINGS, 3) == [0, 1, 2]
    assert [embed_shard(counting, images, sharded, SETTINGS, i, 3) for i in (2, 0, 1)] == [3, 4, 4]
    assert missing_shards(counting, images, sharded, SETTINGS, 3) == []
    assert embed_shard(counting, images, sharded, SETTINGS, 1, 3) == 0  # a rerun shard has nothing to do
    Counting.images = 0
    got = get_features(counting, images, sharded, SETTINGS)
    assert got.n_embedded == 0 and Counting.images == 0  # the complete set comes from the shards' chunks
    np.testing.assert_array_equal(np.asarray(got.features), whole)


def test_a_shard_killed_mid_write_leaves_no_chunk_a_lookup_accepts(tmp_path, counting, monkeypatch):
    images = make_images(tmp_path, 8)
    cache = FeatureCache(tmp_path / "c")
    embed_shard(counting, images, cache, SETTINGS, 0, 2)
    # Shard 1 is killed between writing its files and the rename: its temporary directory stays (no cleanup runs on SIGKILL).
    real_rename = os.rename

    def killed(src, dst):
        raise SystemExit("killed")

    monkeypatch.setattr(cache_mod.os, "rename", killed)
    monkeypatch.setattr(cache_mod.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(SystemExit):
        embed_shard(counting, images, cache, SETTINGS, 1, 2)
    monkeypatch.setattr(cache_mod.os, "rename", real_rename)
    bdir = next(p for p in cache.base.iterdir() if p.is_dir())
    assert [p.name.startswith("tmp-") for p in bdir.iterdir() if p.is_dir()].count(True) == 1
    assert missing_shards(counting, images, cache, SETTINGS, 2) == [1]
    # A chunk truncated after its rename (a damaged copy) is rejected too, and its shard counts as missing.
    embed_shard(counting, images, cache, SETTINGS, 1, 2)
    assert missing_shards(counting, images, cache, SETTINGS, 2) == []
    newest = max((p for p in bdir.iterdir() if p.name.startswith("chunk-")), key=lambda p: p.stat().st_mtime_ns)
    feats = newest / "features.npy"
    feats.write_bytes(feats.read_bytes()[:-16])
    assert len(missing_shards(counting, images, cache, SETTINGS, 2)) == 1
    whole = get_features(counting, images, FeatureCache(tmp_path / "ref"), SETTINGS).features
    np.testing.assert_array_equal(np.asarray(get_features(counting, images, cache, SETTINGS).features), whole)
