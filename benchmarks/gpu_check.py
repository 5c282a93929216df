"""CUDA checks of the extraction path (issue 16) that no CPU test can make; run by `benchmarks/gpu_check.sh` on a GPU.

Each check prints one `PASS name: ...` or `FAIL name: ...` line; the last line is one JSON object with every figure.
Exit status 1 if any check failed. Needs no network (random-init models) and writes only to a temporary folder.

    python benchmarks/gpu_check.py [--model open-clip:ViT-B-16]

1. nvjpeg vs PIL: the fast path's batch on the GPU (batched `decode_jpeg(device="cuda")`, grouped resize, normalise)
   against the backbone's own PIL transform: the largest per-image mean absolute difference after normalisation is
   below `fastpath.MEAN_ABS_TOLERANCE`.
2. features: fast vs exact on CUDA (bf16/fp16 autocast), for `builtin:random-vit` and the model: cosine >= 0.99.
3. mixed batch: JPEGs, a PNG, a CMYK JPEG and a corrupt JPEG in one fast-path batch (the mixed GPU/CPU stacking, the
   batched decode's per-image retry): the corrupt file is named, the others are cached, three took the PIL path.
4. real out-of-memory: a backbone that allocates free_memory/20 bytes per image: batch_size = "auto" backs off (48
   images: 48, 24, then 12 fit), features equal those of a fixed batch of that size, nothing lost or repeated.
5. channels-last on a ResNet-50 (random init): cosine to the contiguous run >= 0.999, and both forward rates.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from biobench import embed, fastpath
from biobench.backbones import load_vision_backbone, register_vision_backbone
from biobench.backbones.builtin import PixelStats
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from biobench.fixtures import draw
from biobench.images import ImageSet

RESULTS: dict[str, object] = {}
FAILED: list[str] = []


def report(name: str, ok: bool, detail: str, **figures) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    RESULTS[name] = {"ok": ok, **figures}
    if not ok:
        FAILED.append(name)


def jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    sizes = [(500, 375), (375, 500), (320, 320), (97, 61), (224, 224), (640, 480), (1024, 768), (500, 375)]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        w, h = sizes[k % len(sizes)]
        p = root / f"im{k}.jpg"
        draw(rng, 0, k % 4, size=max(w, h)).crop((0, 0, w, h)).save(p, quality=90)
        out.append(p)
    return out


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def check_nvjpeg(backbone, paths: list[Path], device: torch.device) -> None:
    transform = backbone.make_img_transform()
    plan = fastpath.plan(transform)
    if isinstance(plan, str):
        report("nvjpeg_vs_pil", False, f"no tensor plan for the transform: {plan}")
        return
    images = ImageSet("t", [p.stem for p in paths], paths)
    dataset = embed._ImageDataset(images, np.arange(len(paths)), transform, plan, str(device))
    items = [dataset[i] for i in range(len(paths))]
    times: dict[str, float] = {**dict.fromkeys(embed.STAGES, 0.0), "n_fast": 0, "n_fallback": 0}
    idx, x, errors = embed._collate(items, dataset, device, times)
    exact = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    diff = (x.float().cpu() - exact).abs().mean(dim=(1, 2, 3))
    worst = float(diff.max())
    ok = not errors and len(idx) == len(paths) and times["n_fallback"] == 0 and worst < fastpath.MEAN_ABS_TOLERANCE
    report(
        "nvjpeg_vs_pil",
        ok,
        f"max per-image mean |fast - exact| = {worst:.5f} (tolerance {fastpath.MEAN_ABS_TOLERANCE}), mean {float(diff.mean()):.5f}, "
        f"max pixel {float((x.float().cpu() - exact).abs().max()):.4f}",
        max_mean_abs=worst,
        mean_mean_abs=float(diff.mean()),
    )


def check_features(name: str, backbone, paths: list[Path], root: Path, device: str) -> None:
    images = ImageSet("t", [str(k) for k in range(len(paths))], paths)
    got = {}
    for decode in ("exact", "fast"):
        got[decode] = get_features(backbone, images, FeatureCache(root / f"{name}-{decode}"), EmbedSettings(device, decode=decode))
    cpu = get_features(backbone.to("cpu"), images, FeatureCache(root / f"{name}-cpu"), EmbedSettings("cpu", decode="exact"))
    backbone.to(device)
    c = float(cosine(got["exact"].features, got["fast"].features).min())
    c_cpu = float(cosine(got["exact"].features, cpu.features).min())
    fast = got["fast"]
    ok = c >= 0.99 and fast.decode == "fast" and fast.timings["n_fast"] == len(paths)
    report(
        f"features_{name}",
        ok,
        f"min cosine fast vs exact {c:.6f}; exact CUDA ({fast.extraction.get('precision')}) vs exact CPU fp32 {c_cpu:.6f}; "
        f"fast timings {{{', '.join(f'{k}: {v:.4g}' for k, v in fast.timings.items())}}}",
        cosine_fast_exact=c,
        cosine_cuda_cpu=c_cpu,
        extraction=fast.extraction,
    )


def check_mixed(root: Path, device: str) -> None:
    paths = jpegs(root, 6, seed=1)
    png = root / "x.png"
    Image.open(paths[0]).save(png)
    cmyk = root / "cmyk.jpg"
    Image.open(paths[1]).convert("CMYK").save(cmyk, "JPEG")
    bad = root / "bad.jpg"
    bad.write_bytes(paths[2].read_bytes()[:300])
    all_paths = [*paths, png, cmyk, bad]
    images = ImageSet("mixed", [p.name for p in all_paths], all_paths)
    backbone = load_vision_backbone("builtin", "random-vit").to(device)
    cache = FeatureCache(root / "mixed-cache")
    try:
        get_features(backbone, images, cache, EmbedSettings(device, batch_size=16, decode="fast"))
        report("mixed_batch", False, "no DataError for the corrupt JPEG")
        return
    except DataError as err:
        named = str(bad) in str(err)
    again = get_features(
        backbone, ImageSet("mixed", [p.name for p in all_paths[:-1]], all_paths[:-1]), cache, EmbedSettings(device, decode="fast")
    )
    ok = named and again.n_cached == len(all_paths) - 1
    report("mixed_batch", ok, f"corrupt file named: {named}; others cached: {again.n_cached}/{len(all_paths) - 1}")


class Hungry(PixelStats):
    """Allocates `per_image` bytes per image on the batch's device, as a big activation would."""

    per_image = 0
    ran: list[int] = []

    def __init__(self, ckpt: str = "hungry", *, pretrained: bool = True):
        super().__init__("pixel-stats")

    def img_encode(self, batch):
        scratch = torch.empty(len(batch) * self.per_image, dtype=torch.uint8, device=batch.device)
        type(self).ran.append(len(batch))
        out = super().img_encode(batch)
        del scratch
        return out


def check_oom(paths: list[Path], root: Path, device: str) -> None:
    register_vision_backbone("gpu-check-hungry", Hungry)
    free, _ = torch.cuda.mem_get_info()
    Hungry.per_image = int(free // 20)  # 48 and 24 images do not fit, 12 do
    expected = min(embed.AUTO_BATCH_MAX, len(paths))
    while expected * Hungry.per_image > 0.9 * free:
        expected //= 2
    backbone = load_vision_backbone("gpu-check-hungry", "hungry").to(device)
    images = ImageSet("oom", [str(k) for k in range(len(paths))], paths)
    embed.forget_batch_sizes()
    Hungry.ran = []
    t0 = time.perf_counter()
    auto = get_features(backbone, images, FeatureCache(root / "oom-a"), EmbedSettings(device, batch_size="auto", decode="fast"))
    seconds = time.perf_counter() - t0
    ran = list(Hungry.ran)
    embed.forget_batch_sizes()
    size = int(auto.timings["batch_size"])
    fixed = get_features(backbone, images, FeatureCache(root / "oom-b"), EmbedSettings(device, batch_size=size, decode="fast"))
    same = bool(np.array_equal(auto.features, fixed.features))
    ok = same and size == expected and auto.timings["n_oom"] >= 1 and sum(ran) == len(paths)
    report(
        "oom_back_off",
        ok,
        f"auto settled on {size} (expected {expected}) after {auto.timings['n_oom']} back-offs in {seconds:.1f} s; "
        f"images run {sum(ran)}/{len(paths)}; equal to a fixed batch of {size}: {same}",
        batch_size=size,
        n_oom=auto.timings["n_oom"],
    )


def check_channels_last(device: torch.device) -> None:
    resnet = load_vision_backbone("timm", "resnet50", pretrained=False).to(device)
    assert embed.resolve_channels_last(None, resnet, device)
    x = torch.randn(128, 3, 224, 224, device=device)
    out, rates = {}, {}
    for nhwc in (False, True):
        enc = embed._BackoffEncoder(resnet, device, 128, channels_last=nhwc)
        enc(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            out[nhwc] = enc(x)
        rates[nhwc] = 10 * len(x) / (time.perf_counter() - t0)
    resnet.to(memory_format=torch.contiguous_format)
    c = float(cosine(out[False], out[True]).min())
    report(
        "channels_last",
        c >= 0.999,
        f"ResNet-50 bf16: {rates[False]:.0f} img/s contiguous, {rates[True]:.0f} img/s channels-last; min cosine {c:.6f}",
        contiguous_img_s=rates[False],
        channels_last_img_s=rates[True],
        cosine=c,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="open-clip:ViT-B-16", help="ORG:CKPT, random init")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check.py needs CUDA; torch.cuda.is_available() is False here.")
    device = torch.device("cuda")
    RESULTS["device"] = torch.cuda.get_device_name(device)
    RESULTS["torch"] = torch.__version__
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = jpegs(root, 48)
        org, ckpt = args.model.split(":", 1)
        model = load_vision_backbone(org, ckpt, pretrained=False).to(device)
        for name, fn in (
            ("nvjpeg_vs_pil", lambda: check_nvjpeg(model, paths, device)),
            (
                "features_random-vit",
                lambda: check_features("random-vit", load_vision_backbone("builtin", "random-vit").to(device), paths, root, "cuda"),
            ),
            ("features_model", lambda: check_features("model", model, paths, root, "cuda")),
            ("mixed_batch", lambda: check_mixed(root / "mixed", "cuda")),
            ("oom_back_off", lambda: check_oom(paths, root, "cuda")),
            ("channels_last", lambda: check_channels_last(device)),
        ):
            if name == "mixed_batch":
                (root / "mixed").mkdir()
            try:
                fn()
            except Exception as err:  # one broken check must not hide the others
                import traceback

                traceback.print_exc()
                report(name, False, f"{type(err).__name__}: {err}")
            embed.forget_batch_sizes()
            torch.cuda.empty_cache()
    print(json.dumps({"failed": FAILED, **RESULTS}, default=str))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
