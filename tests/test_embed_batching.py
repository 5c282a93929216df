"""Automatic batch size with out-of-memory back-off, channels-last, torch.compile, the staging thread, and the exact path's
batched normalisation, all on CPU (out-of-memory is injected: a backbone that raises `torch.OutOfMemoryError` above a size).

References are independent of the machinery under test: a fixed small batch, the backbone's whole transform image by image,
`fastpath.geometry` image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from biobench import embed, fastpath
from biobench.backbones import load_vision_backbone, register_vision_backbone
from biobench.backbones.base import EncodedImgBatch, VisionBackbone
from biobench.backbones.builtin import RandomViT
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import BackboneError
from biobench.images import ImageSet
from tests.test_fastpath import SIZES, jpegs, open_clip_transform, timm_transform  # noqa: F401


class OomViT(RandomViT):
    """`builtin:random-vit` that runs out of memory (as CUDA would) for batches above `limit`; logs the batches it ran."""

    limit = 5
    ran: list[int] = []

    def __init__(self, ckpt: str = "oom-vit", *, pretrained: bool = True):
        super().__init__("random-vit")

    def img_encode(self, batch):
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        type(self).ran.append(len(batch))
        return super().img_encode(batch)


class TwoConvs(VisionBackbone):
    """A tiny convolutional backbone that records whether its input arrived channels-last."""

    seen: list[bool] = []

    def __init__(self, ckpt: str = "two-convs", *, pretrained: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2))

    def make_img_transform(self):
        return RandomViT().make_img_transform()

    def img_encode(self, batch):
        type(self).seen.append(batch.is_contiguous(memory_format=torch.channels_last))
        return EncodedImgBatch(self.net(batch).mean(dim=(2, 3)), None)


register_vision_backbone("test-oom-vit", OomViT)
register_vision_backbone("test-two-convs", TwoConvs)


@pytest.fixture
def images(tmp_path):
    paths = jpegs(tmp_path, [(120, 90), (90, 120), (64, 64), (97, 61)] * 5)  # 20 small images (the transform makes 64x64)
    return ImageSet("t", [str(k) for k in range(len(paths))], paths)


@pytest.fixture(autouse=True)
def _fresh_sizes():
    embed.forget_batch_sizes()
    OomViT.ran = []
    yield
    embed.forget_batch_sizes()


def run(backbone, images, path, **kw):
    return get_features(backbone, images, FeatureCache(path), EmbedSettings("cpu", **{"n_workers": 2, **kw}))


def test_oom_back_off_halves_retries_and_matches_a_fixed_small_batch(tmp_path, images, caplog, monkeypatch):
    monkeypatch.setattr(embed, "STAGE_THREAD_ON_CPU", True)  # the CUDA arrangement: collation in the staging thread
    backbone = load_vision_backbone("test-oom-vit", "oom-vit")
    with caplog.at_level("WARNING"):
        got = run(backbone, images, tmp_path / "a", batch_size=16)  # 16 -> 8 -> 4
    assert "Out of memory at batch size 16; continuing with 8" in caplog.text and "batch size 8; continuing with 4" in caplog.text
    assert sum(OomViT.ran) == len(images) and max(OomViT.ran) == 4  # every image once: none lost, none twice
    assert got.timings["batch_size"] == 4 and got.timings["n_oom"] == 2 and got.extraction["batch_size"] == 4
    reference = run(load_vision_backbone("builtin", "random-vit"), images, tmp_path / "b", batch_size=4, n_workers=0)
    np.testing.assert_array_equal(got.features, reference.features)  # the same micro-batches, so the same numbers

    OomViT.ran = []
    again = run(backbone, images, tmp_path / "c", batch_size=16)  # the size learned is where the next extraction starts
    assert again.timings["n_oom"] == 0 and max(OomViT.ran) == 4
    np.testing.assert_array_equal(again.features, reference.features)


def test_auto_batch_size_on_cpu_and_its_record_in_the_store(tmp_path, monkeypatch):
    import biobench
    from biobench.tasks import birds525

    assert embed.batch_sizes("auto", torch.device("cpu")) == (embed.CPU_LOADER_BATCH, embed.CPU_MICRO_BATCH)
    assert embed.batch_sizes("auto", torch.device("cuda")) == (embed.AUTO_BATCH_MAX, embed.AUTO_BATCH_MAX)
    assert embed.batch_sizes(64, torch.device("cpu")) == (64, embed.CPU_MICRO_BATCH)
    with pytest.raises(ValueError, match="batch_size"):
        embed.batch_sizes(0, torch.device("cpu"))
    birds525.make_fixture(tmp_path / "birds")
    monkeypatch.setattr(OomViT, "limit", 12)
    kw = dict(device="cpu", n_workers=2, n_jobs=1, n_bootstrap=50, cache_dir=tmp_path / "cache")
    report = biobench.evaluate("test-oom-vit:oom-vit", "birds525", tmp_path / "birds", batch_size="auto", **kw)  # 32 -> 16 -> 8
    emb = report.config["embedding"]
    assert emb["timings"]["batch_size"] == 8 and emb["timings"]["n_oom"] == 2
    assert emb["extraction"] == {
        "device": "cpu",
        "precision": "fp32",
        "batch_size_setting": "auto",
        "batch_size": 8,
        "channels_last": False,
        "compile": False,
    }
    assert report.config["settings"]["batch_size"] == "auto"


def test_oom_on_a_single_image_names_the_model_and_how_to_fix(tmp_path, images, monkeypatch):
    monkeypatch.setattr(OomViT, "limit", 0)
    with pytest.raises(BackboneError, match="test-oom-vit:oom-vit.*single image.*device"):
        run(load_vision_backbone("test-oom-vit", "oom-vit"), images, tmp_path / "a", batch_size=4)


def test_channels_last_reaches_the_backbone_and_changes_nothing_beyond_rounding(tmp_path, images):
    convs = load_vision_backbone("test-two-convs", "two-convs")
    vit = load_vision_backbone("builtin", "random-vit")
    # Auto: on under CUDA for conv nets only (a ViT's one convolution is its patch embedding), never off CUDA.
    assert embed.resolve_channels_last(None, convs, torch.device("cuda")) is True
    assert embed.resolve_channels_last(None, vit, torch.device("cuda")) is False
    assert embed.resolve_channels_last(None, convs, torch.device("cpu")) is False
    TwoConvs.seen = []
    plain = run(convs, images, tmp_path / "a", batch_size=8)
    assert TwoConvs.seen and not any(TwoConvs.seen) and plain.extraction["channels_last"] is False
    TwoConvs.seen = []
    nhwc = run(convs, images, tmp_path / "b", batch_size=8, channels_last=True)
    assert TwoConvs.seen and all(TwoConvs.seen) and nhwc.extraction["channels_last"] is True
    np.testing.assert_allclose(nhwc.features, plain.features, rtol=1e-4, atol=1e-5)


def test_compile_matches_eager_pads_the_last_batch_and_shares_the_cache_key(tmp_path, images, monkeypatch):
    monkeypatch.setattr(embed, "COMPILE_BACKEND", "eager")  # dynamo traces; no code generation (no compiler needed)
    backbone = load_vision_backbone("builtin", "pixel-stats")
    eager = run(backbone, images, tmp_path / "a", batch_size=8)  # 20 images: batches 8, 8, 4 (padded to 8 when compiled)
    compiled = run(backbone, images, tmp_path / "b", batch_size=8, compile=True)
    assert compiled.extraction["compile"] is True and compiled.n_embedded == len(images)
    np.testing.assert_allclose(compiled.features, eager.features, rtol=1e-5, atol=1e-6)
    # Compile changes float rounding only, so it is not in the cache key: features from either serve both.
    reused = run(backbone, images, tmp_path / "a", batch_size=8, compile=True)
    assert reused.n_cached == len(images) and reused.n_embedded == 0


def test_exact_path_batched_normalisation_is_the_whole_transform_bit_for_bit(tmp_path):
    paths = jpegs(tmp_path, [SIZES[0], SIZES[1], SIZES[3]])
    images = ImageSet("t", [p.stem for p in paths], paths)
    for transform in (open_clip_transform(), timm_transform(), RandomViT().make_img_transform()):
        dataset = embed._ImageDataset(images, np.arange(len(paths)), transform)
        assert dataset.pil_steps is not None and dataset.norm is not None
        items = [dataset[i] for i in range(len(paths))]
        assert all(it.x.dtype == torch.uint8 and not it.fallback for it in items)
        batched = fastpath.normalise(torch.stack([it.x for it in items]), dataset.norm)
        whole = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        assert torch.equal(batched, whole)


@pytest.mark.parametrize("staging_thread", [False, True], ids=["inline", "staging-thread"])
def test_exact_path_features_equal_a_plain_loop(tmp_path, images, monkeypatch, staging_thread):
    """The threaded, batched-normalise exact path (collated inline, as on CPU, or in the staging thread, as under CUDA)
    against the plain loop: PIL, the transform, the backbone."""
    monkeypatch.setattr(embed, "STAGE_THREAD_ON_CPU", staging_thread)
    backbone = load_vision_backbone("builtin", "random-vit")
    got = run(backbone, images, tmp_path / "a", batch_size=8, n_workers=3)
    assert got.decode == "exact" and got.timings["n_fast"] == 0 and got.timings["n_fallback"] == 0
    transform = backbone.make_img_transform()
    with torch.inference_mode():
        reference = np.concatenate(
            [
                backbone.img_encode(
                    torch.stack([transform(Image.open(p).convert("RGB")) for p in images.paths[s : s + 8]])
                ).img_features.numpy()
                for s in range(0, len(images), 8)
            ]
        )
    np.testing.assert_array_equal(got.features, reference)


def test_geometry_of_groups_equals_geometry_image_by_image(tmp_path):
    paths = jpegs(tmp_path, [(500, 375)] * 3 + [(375, 500), (97, 61), (500, 375)])
    decoded = [fastpath.decode([p.read_bytes()], torch.device("cpu"))[0] for p in paths]
    crops = [None, None, (10, 20, 300, 200), None, None, None]
    for transform in (open_clip_transform(), timm_transform()):
        plan = fastpath.plan(transform)
        many = fastpath.geometry_many(decoded, plan, crops)
        for img, crop, got in zip(decoded, crops, many, strict=True):
            assert torch.equal(got, fastpath.geometry(img, plan, crop))


def test_staging_thread_keeps_order_and_passes_errors_on():
    def batches():
        yield from ([k] for k in range(5))

    assert list(embed._staged(batches(), lambda b: b[0] * 10, torch.device("cpu"))) == [0, 10, 20, 30, 40]

    def stage(b):
        if b[0] == 3:
            raise RuntimeError("stage failed on batch 3")
        return b[0]

    got = []
    with pytest.raises(RuntimeError, match="batch 3"):
        for v in embed._staged(batches(), stage, torch.device("cpu")):
            got.append(v)
    assert got == [0, 1, 2]
    early = embed._staged(batches(), lambda b: b, torch.device("cpu"))
    assert next(early) == [0]
    early.close()  # the consumer stops early: the thread ends, nothing hangs
