"""How much the feature cache saves on a small-data sweep, against re-embedding per experiment.

small_data_metrics embedded every image again for every (NeWT task, n_train, seed)
experiment. biobench embeds each image once per backbone and serves every later
experiment from a memory-mapped cache. This script runs both ways in one process on a
generated NeWT fixture with a random-init timm ViT (no download needed) and prints the
seconds spent obtaining features for the whole sweep, and the ratio.

    python benchmarks/embed_cache.py [--model vit_tiny_patch16_224] [--experiments 8] [--per-class 10]

The last line is a JSON object: {"cache_speedup": R, "reference_s": A, "ours_s": B, "n_images": N, "experiments": K}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from biobench.backbones import load_vision_backbone
from biobench.cache import FeatureCache
from biobench.embed import EmbedSettings, extract, get_features
from biobench.tasks import newt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name (random init)")
    parser.add_argument("--experiments", type=int, default=8, help="experiments in the sweep (e.g. 4 n_train x 2 seeds)")
    parser.add_argument("--per-class", type=int, default=10, help="fixture images per class and split")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        newt.make_fixture(tmp / "newt", n_train_per_class=args.per_class, n_test_per_class=args.per_class)
        images = newt.image_set(newt.Config(data=tmp / "newt"))
        backbone = load_vision_backbone("timm", args.model, pretrained=False)
        settings = EmbedSettings(device="cpu", batch_size=64, n_workers=args.workers)
        rows = np.arange(len(images))

        # Reference: every experiment embeds every image (no cache).
        start = time.perf_counter()
        for _ in range(args.experiments):
            ref = extract(backbone, images, rows, settings, checkpoint=lambda r, f: None)
        reference_s = time.perf_counter() - start

        # Ours: the first experiment embeds and caches; the rest read the cache.
        cache = FeatureCache(tmp / "cache")
        start = time.perf_counter()
        for _ in range(args.experiments):
            ours = get_features(backbone, images, cache, settings)
        ours_s = time.perf_counter() - start

        assert np.allclose(np.asarray(ours.features), ref, atol=1e-5), "cached features differ from a fresh pass"
        per_hit = []
        for _ in range(3):
            t = time.perf_counter()
            get_features(backbone, images, cache, settings)
            per_hit.append(time.perf_counter() - t)

    print(f"images: {len(images)}, experiments: {args.experiments}, model: timm:{args.model} (random init, CPU)")
    print(f"reference (re-embed per experiment): {reference_s:8.2f} s")
    print(f"biobench (embed once, then cache):   {ours_s:8.2f} s")
    print(f"one cache hit (keys + memory map):   {min(per_hit):8.3f} s")
    print(f"speed-up: {reference_s / ours_s:.1f}x")
    print(
        json.dumps(
            {
                "cache_speedup": round(reference_s / ours_s, 2),
                "reference_s": round(reference_s, 3),
                "ours_s": round(ours_s, 3),
                "cache_hit_s": round(min(per_hit), 4),
                "n_images": len(images),
                "experiments": args.experiments,
            }
        )
    )


if __name__ == "__main__":
    main()
