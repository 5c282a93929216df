"""How close feature extraction runs to the model's own speed: forward only, the exact path, the fast path, a plain DataLoader.

Generates N photograph-sized JPEGs (500x375, quality 90), then measures images per second for
- forward: the backbone on already-preprocessed batches (the ceiling);
- dataloader: the seeds' way, a torch DataLoader of PIL decode + the backbone's transform in worker processes;
- exact: `biobench.embed.extract` with decode = "exact" (the same PIL transform, in threads);
- fast: `extract` with decode = "fast" (tensor JPEG decode and transform; on the GPU under CUDA);
and the smallest cosine similarity between the exact and fast features.

    python benchmarks/embed.py [--device cuda|cpu] [--model open-clip:ViT-B-16] [--n-images N] [--workers W]

Models load with pretrained=False (random init, no download). The last line is one JSON object:
{"device", "forward_img_s", "exact_img_s", "fast_img_s", "fast_over_forward", "fast_over_exact", "cosine_min", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from biobench.backbones import load_vision_backbone
from biobench.embed import EmbedSettings, _BackoffEncoder, extract
from biobench.images import ImageSet


def make_jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct 500x375 JPEGs: smooth colour fields with noise (so they compress like photographs, not flat colour)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        img = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 20, size=(375, 500, 3))
        p = root / f"{i:06d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="open-clip:ViT-B-16", help="ORG:CKPT, loaded with random weights")
    parser.add_argument("--n-images", type=int, default=None, help="default 4096 on CUDA, 256 on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode threads / DataLoader processes")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = args.n_images or (4096 if cuda else 256)
    batch = args.batch_size or (256 if cuda else 32)
    org, ckpt = args.model.split(":", 1)
    backbone = load_vision_backbone(org, ckpt, pretrained=False).to(device)
    transform = backbone.make_img_transform()
    rates: dict[str, float] = {}
    timings: dict[str, dict] = {}

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), n)
        images = ImageSet("bench", [p.stem for p in paths], paths)
        rows = np.arange(n)

        # Forward only: one preprocessed batch, run over and over.
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[:batch]])
        encoder = _BackoffEncoder(backbone, device, batch)
        encoder(x)  # warm-up (kernels, autocast caches)
        start = time.perf_counter()
        done = 0
        while done < n:
            encoder(x)
            done += len(x)
        rates["forward"] = done / (time.perf_counter() - start)

        # The seeds' way: PIL in DataLoader worker processes.
        loader = torch.utils.data.DataLoader(_PilDataset(paths, transform), batch_size=batch, num_workers=args.workers, pin_memory=cuda)
        start = time.perf_counter()
        for xb in loader:
            encoder(xb)
        rates["dataloader"] = n / (time.perf_counter() - start)

        feats = {}
        for decode in ("exact", "fast"):
            settings = EmbedSettings(args.device, batch, args.workers, decode=decode, checkpoint_every=10**12)
            extract(backbone, images, rows[: min(n, 2 * batch)], settings, lambda r, f: None)  # warm-up
            t: dict = {}
            start = time.perf_counter()
            feats[decode] = extract(backbone, images, rows, settings, lambda r, f: None, timings=t)
            rates[decode] = n / (time.perf_counter() - start)
            timings[decode] = {k: round(v / n * 1000, 3) if isinstance(v, float) else v for k, v in t.items()}

    a, b = feats["exact"].astype(np.float64), feats["fast"].astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    for decode, t in timings.items():
        print(f"{decode} path, ms per image (read/decode/transform summed over threads): {t}")
    print(
        f"{args.model} on {args.device}, {n} images, batch {batch}, {args.workers} workers: "
        + ", ".join(f"{k} {v:.1f} img/s" for k, v in rates.items())
    )
    out = {
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "model": args.model,
        "n_images": n,
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
