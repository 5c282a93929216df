"""The fast preprocessing path (tensor JPEG decode + the backbone's transform as tensor ops) against the exact PIL path.

Tolerances: the mean absolute difference of the preprocessed tensors, after normalisation, is below
`fastpath.MEAN_ABS_TOLERANCE` (0.03, about two grey levels at CLIP's std) and, with the CPU decoder, below
0.002 (measured: <= 0.0002, no pixel more than one grey level apart); features have cosine >= 0.99 (measured > 0.99999).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from biobench import embed, fastpath
from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from biobench.fixtures import draw
from biobench.images import ImageSet, TableImage


def jpegs(root, sizes, seed=0):
    """Photographs-like JPEGs (smooth fields plus stripes and noise) of the given (width, height)s."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, (w, h) in enumerate(sizes):
        img = draw(rng, 0, k % 4, size=max(w, h)).crop((0, 0, w, h))
        p = root / f"im{k}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


SIZES = [(500, 375), (375, 500), (320, 320), (97, 61), (224, 224)]


def open_clip_transform():
    import open_clip

    return open_clip.image_transform(224, is_train=False)


def timm_transform():
    import timm

    return timm.data.create_transform(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, is_training=False)


def torchvision_transform():
    from torchvision.transforms._presets import ImageClassification

    return ImageClassification(crop_size=224, resize_size=232)


def fast_and_exact(transform, paths, crops=None):
    plan = fastpath.plan(transform)
    assert isinstance(plan, fastpath.Plan), plan
    images = ImageSet("t", [p.stem for p in paths], paths, crops)
    rows = np.arange(len(paths))
    fast = embed._ImageDataset(images, rows, transform, plan)
    items = [fast[i] for i in rows]
    assert all(it.x.dtype == torch.uint8 and not it.fallback for it in items)
    x_fast = fastpath.normalise(torch.stack([it.x for it in items]), plan)
    x_exact = torch.stack(
        [
            transform(Image.open(p).convert("RGB").crop(c) if c else Image.open(p).convert("RGB"))
            for p, c in zip(paths, crops or [None] * len(paths))
        ]
    )
    return x_fast, x_exact


@pytest.mark.parametrize("make", [open_clip_transform, timm_transform, torchvision_transform], ids=["open_clip", "timm", "torchvision"])
def test_fast_preprocessing_matches_the_reference_transform(tmp_path, make):
    x_fast, x_exact = fast_and_exact(make(), jpegs(tmp_path, SIZES))
    assert x_fast.shape == x_exact.shape == (len(SIZES), 3, 224, 224)
    per_image = (x_fast - x_exact).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < fastpath.MEAN_ABS_TOLERANCE, per_image
    assert per_image.max() < 0.002 and (x_fast - x_exact).abs().max() < 0.02  # CPU decoder: resampling rounds apart by one grey level


def test_crop_boxes_and_squash_resize_match(tmp_path):
    transform = load_vision_backbone("builtin", "random-vit").make_img_transform()  # Resize((64, 64)), ToTensor, Normalize
    crops = [(10, 20, 300, 200), (-5, -5, 100, 90), None, (0, 0, 97, 61), (30.4, 40.6, 190.2, 210.7)]
    x_fast, x_exact = fast_and_exact(transform, jpegs(tmp_path, SIZES), crops)
    assert x_fast.shape == (len(SIZES), 3, 64, 64)
    assert (x_fast - x_exact).abs().mean(dim=(1, 2, 3)).max() < fastpath.MEAN_ABS_TOLERANCE


def test_unmappable_transforms_fall_back_with_a_reason(tmp_path, caplog):
    from torchvision import transforms as T

    assert "no tensor equivalent" in fastpath.plan(T.Compose([T.Lambda(lambda x: x), T.ToTensor()]))
    assert "nearest" in fastpath.plan(T.Compose([T.Resize(32, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(32), T.ToTensor()]))
    assert "no fixed output size" in fastpath.plan(T.Compose([T.Resize(32), T.ToTensor()]))
    assert "no ToTensor" in fastpath.plan(T.Compose([T.Resize((32, 32))]))

    backbone = load_vision_backbone("builtin", "random-vit")
    backbone.make_img_transform = lambda: T.Compose([T.Resize((64, 64)), T.ToTensor(), T.Lambda(lambda x: x * 2 - 1)])
    with caplog.at_level("WARNING"):
        assert embed.choose_path(backbone, EmbedSettings(decode="fast")) == ("exact", None)
    assert "falls back to the exact path" in caplog.text and "Lambda" in caplog.text


def test_jpeg_sniffing():
    gray = Image.new("L", (8, 8), 100)
    for img, plain in ((Image.new("RGB", (8, 8)), True), (gray, True), (Image.new("CMYK", (8, 8)), False)):
        import io

        buf = io.BytesIO()
        img.save(buf, "JPEG", progressive=img.mode == "L")
        assert fastpath.is_plain_jpeg(buf.getvalue()) is plain
    assert not fastpath.is_plain_jpeg(b"\x89PNG\r\n\x1a\n")


def features(backbone, images, tmp_path, decode, **kw):
    result = get_features(backbone, images, FeatureCache(tmp_path / f"cache-{decode}"), EmbedSettings("cpu", 8, 2, decode=decode, **kw))
    return result


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("model", [("builtin", "random-vit"), ("open-clip", "ViT-B-32")], ids=["random-vit", "open_clip-ViT-B-32"])
def test_features_of_both_paths_agree(tmp_path, model):
    backbone = load_vision_backbone(*model, pretrained=False)
    paths = jpegs(tmp_path, SIZES * 2)
    images = ImageSet("t", [f"{k}" for k in range(len(paths))], paths)
    exact = features(backbone, images, tmp_path, "exact")
    fast = features(backbone, images, tmp_path, "fast")
    assert exact.decode == "exact" and fast.decode == "fast"
    assert fast.timings["n_fast"] == len(paths) and fast.timings["n_fallback"] == 0
    assert set(embed.STAGES) <= set(fast.timings) and fast.timings["forward"] > 0 and fast.timings["decode"] > 0
    assert cosine(exact.features, fast.features).min() >= 0.99


def test_paths_are_cached_apart_and_non_jpegs_fall_back(tmp_path):
    backbone = load_vision_backbone("builtin", "random-vit")
    paths = jpegs(tmp_path, SIZES[:3])
    png = tmp_path / "x.png"
    Image.open(paths[0]).save(png)
    images = ImageSet("t", ["a", "b", "c", "png"], [*paths, png])
    cache = FeatureCache(tmp_path / "c")
    exact = get_features(backbone, images, cache, EmbedSettings("cpu", 4, 0, decode="exact"))
    fast = get_features(backbone, images, cache, EmbedSettings("cpu", 4, 0, decode="fast"))
    assert fast.n_embedded == 4 and fast.n_cached == 0  # not served the exact path's features
    assert fast.timings["n_fast"] == 3 and fast.timings["n_fallback"] == 1
    np.testing.assert_allclose(fast.features[3], exact.features[3], atol=1e-5)  # the PNG took the exact path
    assert embed.cache_key(backbone, "cpu", "exact") == embed.cache_key(backbone, "cpu")
    assert embed.cache_key(backbone, "cpu", "fast") != embed.cache_key(backbone, "cpu")
    again = get_features(backbone, images, cache, EmbedSettings("cpu", 4, 0, decode="fast"))
    assert again.n_cached == 4 and again.decode == "fast"


def test_fast_path_names_corrupt_images_and_keeps_the_rest(tmp_path):
    backbone = load_vision_backbone("builtin", "random-vit")
    paths = jpegs(tmp_path, SIZES)
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # truncated JPEG: tensor decoder and PIL both refuse it
    paths[3].write_bytes(b"\xff\xd8\xff not really")
    images = ImageSet("t", [p.stem for p in paths], paths)
    cache = FeatureCache(tmp_path / "c")
    with pytest.raises(DataError) as err:
        get_features(backbone, images, cache, EmbedSettings("cpu", 2, 2, decode="fast"))
    assert str(paths[1]) in str(err.value) and str(paths[3]) in str(err.value) and "other 3 images are cached" in str(err.value)


def test_table_images_take_the_fast_path(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = jpegs(tmp_path, SIZES)
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": p.name} for p in paths]})
    pq.write_table(table, tmp_path / "shard.parquet", row_group_size=2)
    refs = [TableImage(tmp_path / "shard.parquet", i) for i in range(len(paths))]
    backbone = load_vision_backbone("builtin", "random-vit")
    in_table = features(backbone, ImageSet("t", [str(i) for i in range(len(refs))], refs), tmp_path / "a", "fast")
    on_disk = features(backbone, ImageSet("t", [str(i) for i in range(len(refs))], paths), tmp_path / "b", "fast")
    assert in_table.timings["n_fast"] == len(refs)
    np.testing.assert_allclose(in_table.features, on_disk.features, atol=1e-6)


def test_probe_scores_agree_and_the_path_is_stored(tmp_path):
    import biobench
    from biobench.tasks import birds525

    birds525.make_fixture(tmp_path / "birds")
    kw = dict(device="cpu", n_workers=2, n_jobs=1, n_bootstrap=200, cache_dir=tmp_path / "cache")
    exact = biobench.evaluate("builtin:random-vit", "birds525", tmp_path / "birds", decode="exact", **kw)
    fast = biobench.evaluate("builtin:random-vit", "birds525", tmp_path / "birds", decode="fast", **kw)
    assert exact.config["embedding"]["decode"] == "exact" and fast.config["embedding"]["decode"] == "fast"
    assert fast.config["settings"]["decode"] == "fast" and fast.config["embedding"]["timings"]["forward"] > 0
    assert exact.result.ci_low <= fast.result.score <= exact.result.ci_high
    assert fast.result.ci_low <= exact.result.score <= fast.result.ci_high


def test_default_path_is_exact_on_cpu_and_fast_on_cuda():
    assert embed.resolve_decode(None, "cpu") == "exact" and embed.resolve_decode(None, "cuda") == "fast"
    assert embed.resolve_decode("fast", "cpu") == "fast"
