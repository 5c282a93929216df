"""Embedding engine and feature cache: zero forward passes on repeats, atomic chunks, OOM back-off, clear decode errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from biobench import embed
from biobench.backbones import EncodedImgBatch, VisionBackbone, load_vision_backbone, register_vision_backbone
from biobench.backbones.builtin import PixelStats
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from biobench.images import ImageSet


class Counting(PixelStats):
    """pixel-stats that counts its forward passes and images."""

    calls = 0
    images = 0

    def __init__(self, ckpt: str = "counting", *, pretrained: bool = True):
        super().__init__("pixel-stats")

    def img_encode(self, batch):
        type(self).calls += 1
        type(self).images += len(batch)
        return super().img_encode(batch)


class OomAbove(PixelStats):
    """Raises CUDA-style out-of-memory for batches larger than `limit`."""

    limit = 3
    sizes: list[int] = []

    def __init__(self, ckpt: str = "oom", *, pretrained: bool = True):
        super().__init__("pixel-stats")

    def img_encode(self, batch):
        if len(batch) > self.limit:
            raise embed.OutOfMemoryError("CUDA out of memory (simulated)")
        type(self).sizes.append(len(batch))
        return super().img_encode(batch)


register_vision_backbone("test-counting", Counting)
register_vision_backbone("test-oom", OomAbove)


def make_images(root, n, seed=0, name="set"):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = root / f"img{seed}_{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return ImageSet(name, [p.stem for p in paths], paths)


@pytest.fixture
def counting():
    Counting.calls = Counting.images = 0
    return load_vision_backbone("test-counting", "counting")


SETTINGS = EmbedSettings(device="cpu", batch_size=4, n_workers=0)


def test_features_match_direct_forward_pass(tmp_path, counting):
    images = make_images(tmp_path, 10)
    result = get_features(counting, images, FeatureCache(tmp_path / "c"), SETTINGS)
    transform = counting.make_img_transform()
    direct = counting.img_encode(torch.stack([transform(Image.open(p).convert("RGB")) for p in images.paths]))
    assert np.allclose(result.features, direct.img_features.numpy(), atol=1e-6)
    assert result.n_embedded == 10 and result.n_cached == 0


def test_second_request_does_no_forward_pass_and_maps_the_file(tmp_path, counting):
    images = make_images(tmp_path, 10)
    cache = FeatureCache(tmp_path / "c")
    first = get_features(counting, images, cache, SETTINGS)
    calls = Counting.calls
    assert calls == 3  # batches of 4, 4, 2
    again = get_features(load_vision_backbone("test-counting", "counting"), images, cache, SETTINGS)
    assert Counting.calls == calls and again.n_cached == 10 and again.n_embedded == 0
    assert isinstance(again.features, np.memmap)
    assert np.array_equal(np.asarray(again.features), first.features)


def test_subsets_and_supersets_reuse_cached_images(tmp_path, counting):
    cache = FeatureCache(tmp_path / "c")
    a = make_images(tmp_path, 6, seed=1, name="a")
    b = make_images(tmp_path, 5, seed=2, name="b")
    fa = get_features(counting, a, cache, SETTINGS).features
    fb = get_features(counting, b, cache, SETTINGS).features
    Counting.images = 0
    mixed = ImageSet("mixed", [*a.ids[::2], *b.ids[1:]], [*a.paths[::2], *b.paths[1:]])
    fm = get_features(counting, mixed, cache, SETTINGS).features
    assert Counting.images == 0
    assert np.array_equal(fm, np.concatenate([fa[::2], fb[1:]]))
    extra = make_images(tmp_path, 2, seed=3)
    bigger = ImageSet("bigger", [*a.ids, *extra.ids], [*a.paths, *extra.paths])
    fbig = get_features(counting, bigger, cache, SETTINGS)
    assert Counting.images == 2 and fbig.n_cached == 6
    assert np.array_equal(fbig.features[:6], fa)


def test_changed_file_is_re_embedded(tmp_path, counting):
    images = make_images(tmp_path, 3)
    cache = FeatureCache(tmp_path / "c")
    get_features(counting, images, cache, SETTINGS)
    Image.new("RGB", (30, 30), (255, 0, 0)).save(images.paths[1])
    Counting.images = 0
    result = get_features(counting, images, cache, SETTINGS)
    assert Counting.images == 1 and result.n_cached == 2


def test_content_keys_survive_a_move(tmp_path, counting):
    images = make_images(tmp_path, 3)
    cache = FeatureCache(tmp_path / "c")
    settings = EmbedSettings(device="cpu", batch_size=4, n_workers=0, key_mode="content")
    get_features(counting, images, cache, settings)
    moved = tmp_path / "moved"
    moved.mkdir()
    new_paths = [p.rename(moved / p.name) for p in images.paths]
    Counting.images = 0
    get_features(counting, ImageSet("moved", images.ids, new_paths), cache, settings)
    assert Counting.images == 0


def test_different_backbones_do_not_share_features(tmp_path, counting):
    images = make_images(tmp_path, 3)
    cache = FeatureCache(tmp_path / "c")
    a = get_features(counting, images, cache, SETTINGS)
    b = get_features(load_vision_backbone("builtin", "random-vit"), images, cache, SETTINGS)
    assert a.backbone_fingerprint != b.backbone_fingerprint and a.features.shape[1] != b.features.shape[1]


def test_oom_halves_the_batch_and_gives_identical_features(tmp_path, caplog):
    images = make_images(tmp_path, 10)
    OomAbove.sizes = []
    backbone = load_vision_backbone("test-oom", "oom")
    with caplog.at_level("WARNING"):
        result = get_features(backbone, images, FeatureCache(tmp_path / "c"), EmbedSettings(device="cpu", batch_size=8, n_workers=0))
    assert max(OomAbove.sizes) <= 3 and sum(OomAbove.sizes) == 10
    assert "Out of memory at batch size 8" in caplog.text
    reference = get_features(load_vision_backbone("builtin", "pixel-stats"), images, FeatureCache(tmp_path / "d"), SETTINGS)
    assert np.allclose(result.features, reference.features)


@pytest.mark.parametrize("n_workers", [0, 2])
def test_corrupt_image_is_named(tmp_path, counting, n_workers):
    images = make_images(tmp_path, 6)
    images.paths[4].write_bytes(b"this is not an image")
    with pytest.raises(DataError) as info:
        get_features(counting, images, FeatureCache(tmp_path / "c"), EmbedSettings(device="cpu", batch_size=2, n_workers=n_workers))
    assert str(images.paths[4]) in str(info.value) and "corrupt" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_truncated_jpeg_is_named(tmp_path, counting):
    images = make_images(tmp_path, 2)
    jpg = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (0, 128, 0)).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[:200])
    broken = ImageSet("cut", [*images.ids, "cut"], [*images.paths, jpg])
    with pytest.raises(DataError, match="cut.jpg"):
        get_features(counting, broken, FeatureCache(tmp_path / "c"), SETTINGS)


def test_checkpoints_keep_finished_work_after_a_crash(tmp_path):
    images = make_images(tmp_path, 12)
    cache = FeatureCache(tmp_path / "c")

    class Crashing(PixelStats):
        seen = 0

        def img_encode(self, batch):
            type(self).seen += len(batch)
            if type(self).seen > 8:
                raise KeyboardInterrupt
            return super().img_encode(batch)

    register_vision_backbone("test-crashing", Crashing)
    backbone = load_vision_backbone("test-crashing", "pixel-stats")
    settings = EmbedSettings(device="cpu", batch_size=2, n_workers=0, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        get_features(backbone, images, cache, settings)
    _, found = cache.lookup(embed.cache_key(backbone, "cpu"), images.keys())
    assert found.sum() == 8  # two checkpoints of 4 survived
    assert not any(p.name.startswith("tmp-") for p in cache.base.rglob("*"))
    Crashing.seen = -100  # no more crashes
    result = get_features(backbone, images, cache, settings)
    assert result.n_cached == 8 and result.n_embedded == 4


def test_cache_ls_and_rm(tmp_path, counting):
    cache = FeatureCache(tmp_path / "c")
    get_features(counting, make_images(tmp_path, 3, seed=1, name="alpha"), cache, SETTINGS)
    get_features(counting, make_images(tmp_path, 2, seed=2, name="beta"), cache, SETTINGS)
    get_features(load_vision_backbone("builtin", "random-vit"), make_images(tmp_path, 2, seed=2, name="beta"), cache, SETTINGS)
    entries = {(e.model, e.dataset): e for e in cache.entries()}
    assert entries[("test-counting:counting", "alpha")].n_images == 3
    assert entries[("test-counting:counting", "beta")].dim == 60
    assert entries[("builtin:random-vit", "beta")].dim == 96
    assert all(e.bytes > 0 for e in entries.values())
    assert cache.remove(model="builtin:random-vit") > 0
    assert {e.model for e in cache.entries()} == {"test-counting:counting"}
    cache.remove(dataset="alpha")
    assert [(e.model, e.dataset) for e in cache.entries()] == [("test-counting:counting", "beta")]
    cache.remove()
    assert cache.entries() == []


def test_cache_put_is_atomic(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "c")
    keys = np.array([b"a" * 32, b"b" * 32], dtype="S32")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError):
        cache.put("f" * 64, keys, np.zeros((2, 3)), dataset="x", backbone_info={"name": "m"})
    monkeypatch.undo()
    assert cache.lookup("f" * 64, keys)[1].sum() == 0
    assert [p.name for p in cache.backbone_dir("f" * 64).iterdir()] == ["backbone.json"]


def test_bad_backbone_output_is_a_clear_error():
    class Bad(VisionBackbone):
        def __init__(self, ckpt, *, pretrained=True):
            super().__init__()

        def img_encode(self, batch):
            return EncodedImgBatch(batch, None)

    with pytest.raises(Exception, match=r"shape \(batch, dim\)"):
        Bad("x").img_encode(torch.zeros(2, 3, 4, 4))


def test_unwritable_cache_warns_and_still_returns_features(tmp_path, counting, caplog):
    images = make_images(tmp_path, 3)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level("WARNING"):
        result = get_features(counting, images, FeatureCache(blocked), SETTINGS)
    assert result.features.shape == (3, 60) and result.n_embedded == 3
    assert "Cannot write the feature cache" in caplog.text and "BIOBENCH_CACHE" in caplog.text


def test_changing_the_weights_of_the_same_instance_changes_the_features(tmp_path):
    images = make_images(tmp_path, 3)
    cache = FeatureCache(tmp_path / "c")
    vit = load_vision_backbone("builtin", "random-vit")
    before = np.array(get_features(vit, images, cache, SETTINGS).features)
    with torch.no_grad():
        vit.model.norm.weight.mul_(2.0)  # e.g. another epoch of training on the same object
    after = get_features(vit, images, cache, SETTINGS)
    assert after.n_embedded == 3 and not np.allclose(before, after.features)
