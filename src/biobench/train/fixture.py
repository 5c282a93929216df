"""A generated TreeOfLife-10M-format shard set and TreeOfLife-10M-Captions-format table (`biobench fixture tol-shards`).

Classes are `biobench.fixtures.COLOURED_TAXA`: each image is mostly its class colour and every name form and
caption names that colour, so a CLIP trained on it can learn the pairing. Damage included on purpose: one
sample whose image bytes do not decode, one with no image, and `n_uncaptioned` uuids absent from the table.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from biobench import fixtures

HIGHER = "Animalia Chordata Aves Passeriformes"


def _texts(genus: str, epithet: str, common: str) -> dict[str, str]:
    taxon = f"{HIGHER} {genus}idae {genus} {epithet}"
    return {
        "sci": f"{genus} {epithet}",
        "com": common,
        "taxon": taxon,
        "taxonTag": f"a photo of {taxon}.",
        "sci_com": f"{genus} {epithet} with common name {common}",
        "taxon_com": f"{taxon} with common name {common}",
        "taxonTag_com": f"a photo of {taxon} with common name {common}.",
    }


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def make_tol_shards(
    root: Path, *, seed: int = 0, n_shards: int = 3, per_shard: int = 24, n_classes: int = 8, n_uncaptioned: int = 2
) -> dict:
    """Write ROOT/shards/shard-{000000..}.tar and ROOT/uuid_caption_description.parquet; returns their paths and counts."""
    import polars as pl

    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    taxa = fixtures.COLOURED_TAXA[:n_classes]
    rows, labels = [], {}
    n = n_shards * per_shard
    uncaptioned = set(rng.choice(np.arange(2, n), size=n_uncaptioned, replace=False).tolist())
    for s in range(n_shards):
        with tarfile.open(root / "shards" / f"shard-{s:06d}.tar", "w") as tar:
            for i in range(per_shard):
                idx = s * per_shard + i
                label = int(rng.integers(len(taxa)))
                colour, genus, epithet, common, rgb = taxa[label]
                key = fixtures.example_id(rng)
                if idx == 0:
                    _add(tar, f"{key}.jpg", b"\xff\xd8 not a jpeg")  # corrupt image
                elif idx != 1:  # sample 1 has no image at all
                    _add(tar, f"{key}.jpg", fixtures.jpeg_bytes(fixtures.colour_image(rng, rgb, size=32)))
                for form, text in _texts(genus, epithet, common).items():
                    _add(tar, f"{key}.{form}.txt", text.encode())
                labels[key] = label
                if idx not in uncaptioned:
                    pose = ("perched on a branch", "standing on the ground", "in flight", "on a fence")[int(rng.integers(4))]
                    rows.append((key, f"A {colour} bird with {colour} plumage, {pose}."))
    table = root / "uuid_caption_description.parquet"
    pl.DataFrame(rows, schema=["uuid", "caption"], orient="row").write_parquet(table)
    return {
        "shards": str(root / "shards" / f"shard-{{000000..{n_shards - 1:06d}}}.tar"),
        "captions": table,
        "labels": labels,
        "n_samples": n,
        "n_uncaptioned": n_uncaptioned,
    }
