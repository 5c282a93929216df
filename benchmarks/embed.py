"""How close feature extraction runs to the model's own speed: forward only, the exact path, the fast path, a plain DataLoader.

Generates N photograph-sized JPEGs (500x375, quality 90), then measures images per second for
- forward: the backbone on already-preprocessed batches (the ceiling);
- dataloader: the seeds' way, a torch DataLoader of PIL decode + the backbone's transform in worker processes;
- exact: `biobench.embed.extract` with decode = "exact" (the same PIL transform, in threads);
- fast: `extract` with decode = "fast" (tensor JPEG decode and transform; on the GPU under CUDA);
and the smallest cosine similarity between the exact and fast features.

    python benchmarks/embed.py [--device cuda|cpu] [--model open-clip:ViT-B-16] [--n-images N] [--workers W]
        [--batch-size auto|N] [--compile] [--channels-last auto|on|off]

Models load with pretrained=False (random init, no download). All four use the same batch size (the one the
forward-only run settles on after any out-of-memory back-off), precision, channels-last and compile settings.
The last line is one JSON object: {"device", "forward_img_s", "exact_img_s", "fast_img_s", "fast_over_forward",
"fast_over_exact", "cosine_min", "batch_size", "precision", "channels_last", "compile", ...}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from biobench.backbones import load_vision_backbone
from biobench.config import default_decode_threads
from biobench.embed import EmbedSettings, _BackoffEncoder, batch_sizes, extract, precision_label, resolve_channels_last
from biobench.images import ImageSet


def make_jpegs(root: Path, n: int, seed: int = 0, unique: int = 1024) -> list[Path]:
    """n image paths over min(n, unique) distinct 500x375 JPEGs (smooth colour fields with noise, so they compress like
    photographs, not flat colour), cycled: every read still goes through the file system and the decoder."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(min(n, unique)):
        coarse = Image.fromarray(rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        img = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 20, size=(375, 500, 3))
        p = root / f"{i:06d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return [paths[i % len(paths)] for i in range(n)]


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _forward_rate(encoder: _BackoffEncoder, x: torch.Tensor, n: int) -> float:
    """Images per second of the backbone alone on a batch already on the device, launched as `extract` launches
    (the next batch queued before the last one's features are collected)."""
    encoder(x)  # warm-up (kernels, autocast caches, compilation)
    start = time.perf_counter()
    done, pending = 0, None
    while done < n:
        launched = encoder.submit(x)
        if pending is not None:
            encoder.finish(pending)
        pending = launched
        done += len(x)
    encoder.finish(pending)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="open-clip:ViT-B-16", help="ORG:CKPT, loaded with random weights")
    parser.add_argument("--n-images", type=int, default=None, help="default 8192 on CUDA, 256 on CPU")
    parser.add_argument("--batch-size", type=_batch_size, default="auto", help='images per forward pass, or "auto" (default)')
    parser.add_argument("--workers", type=int, default=default_decode_threads(), help="decode threads / DataLoader processes")
    parser.add_argument("--compile", action="store_true", help="run the backbone through torch.compile")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = args.n_images or (8192 if cuda else 256)
    loader_batch, micro = batch_sizes(args.batch_size, device)
    org, ckpt = args.model.split(":", 1)
    backbone = load_vision_backbone(org, ckpt, pretrained=False).to(device)
    transform = backbone.make_img_transform()
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    settings = {
        "decode": None,
        "batch_size": args.batch_size,
        "n_workers": args.workers,
        "channels_last": channels_last,
        "compile": args.compile,
        "checkpoint_every": 10**12,
    }
    nhwc = resolve_channels_last(channels_last, backbone, device)
    rates: dict[str, float] = {}
    timings: dict[str, dict] = {}

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), n)
        images = ImageSet("bench", [str(i) for i in range(n)], paths)
        rows = np.arange(n)

        # Forward only: one preprocessed batch, already on the device, run over and over (the ceiling).
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[:micro]]).to(device)
        encoder = _BackoffEncoder(backbone, device, micro, channels_last=nhwc, compile=args.compile)
        rates["forward"] = _forward_rate(encoder, x, n)
        micro = encoder.micro  # after any out-of-memory back-off (remembered for the runs below)
        del x

        # The seeds' way: PIL in DataLoader worker processes.
        loader = torch.utils.data.DataLoader(
            _PilDataset(paths, transform), batch_size=loader_batch, num_workers=args.workers, pin_memory=cuda
        )
        start = time.perf_counter()
        for xb in loader:
            encoder(xb)
        rates["dataloader"] = n / (time.perf_counter() - start)

        feats = {}
        for decode in ("exact", "fast"):
            s = EmbedSettings(args.device, **{**settings, "decode": decode})
            extract(backbone, images, rows[: min(n, 2 * loader_batch)], s, lambda r, f: None)  # warm-up
            t: dict = {}
            start = time.perf_counter()
            feats[decode] = extract(backbone, images, rows, s, lambda r, f: None, timings=t)
            rates[decode] = n / (time.perf_counter() - start)
            timings[decode] = {k: round(v / n * 1000, 3) if isinstance(v, float) else v for k, v in t.items()}

    a, b = feats["exact"].astype(np.float64), feats["fast"].astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    for decode, t in timings.items():
        print(f"{decode} path, ms per image (read/decode/transform summed over threads): {t}")
    print(
        f"{args.model} on {args.device} ({precision_label(device)}), {n} images, batch {args.batch_size} -> {timings['fast']['batch_size']}, "
        f"{args.workers} workers, channels-last {nhwc}, compile {args.compile}: "
        + ", ".join(f"{k} {v:.1f} img/s" for k, v in rates.items())
    )
    out = {
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "model": args.model,
        "n_images": n,
        "batch_size": int(timings["fast"]["batch_size"]),
        "batch_size_setting": args.batch_size,
        "precision": precision_label(device),
        "channels_last": nhwc,
        "compile": args.compile,
        "workers": args.workers,
        "forward_img_s": round(rates["forward"], 1),
        "dataloader_img_s": round(rates["dataloader"], 1),
        "exact_img_s": round(rates["exact"], 1),
        "fast_img_s": round(rates["fast"], 1),
        "fast_over_forward": round(rates["fast"] / rates["forward"], 3),
        "fast_over_exact": round(rates["fast"] / rates["exact"], 3),
        "exact_over_dataloader": round(rates["exact"] / rates["dataloader"], 3),
        "cosine_min": round(float(cos.min()), 6),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
