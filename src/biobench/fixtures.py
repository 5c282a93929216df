"""Generated images with a learnable signal, for fixtures in every task's real on-disk format.

An image is smooth random colour noise; its class shifts the mean colour towards a
class-specific hue and overlays stripes of a class-specific frequency and angle. Colour
histograms (`builtin:pixel-stats`) pick the signal up easily, so tests can demand
accuracy well above chance, and near chance once labels are shuffled. `reid_coco` writes
a whole re-identification set in Wild Me's COCO layout (LILA's Beluga and Leopard ID).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def example_id(rng: np.random.Generator) -> str:
    """A UUID-4 string drawn from `rng` (NeWT and others name images by UUID)."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def class_style(group: int, label: int) -> tuple[np.ndarray, float, float]:
    """(RGB tint, stripe frequency, stripe angle) for class `label` of task `group`; deterministic."""
    g = np.random.default_rng([1234, group, label])
    tint = g.uniform(0.15, 0.85, size=3)
    return tint, g.uniform(2.0, 9.0), g.uniform(0.0, np.pi)


def draw(rng: np.random.Generator, group: int, label: int, size: int = 48, strength: float = 0.6) -> Image.Image:
    """One RGB image of class `label` in task `group`; `strength` in [0, 1] sets how visible the class is."""
    coarse = rng.uniform(0.0, 1.0, size=(4, 4, 3))
    noise = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
    noise = noise.astype(np.float32) / 255.0
    tint, freq, angle = class_style(group, label)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    img = (1 - strength) * noise + strength * (0.7 * tint + 0.3 * stripes[..., None])
    img += rng.normal(0.0, 0.03, size=img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def save_jpeg(img: Image.Image, path: Path) -> tuple[int, int]:
    """Write a JPEG (creating folders); returns (height, width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=90)
    return img.height, img.width


def reid_coco(
    root: Path,
    json_path: Path,
    images_dir: Path,
    *,
    seed: int,
    shuffle_labels: bool,
    group: int,
    category: str,
    dataset: str,
    n_individuals: int,
    n_singletons: int,
    viewpoints: Sequence[str] = ("up",),
    scene: tuple[int, int] | None = None,
    pair_every: int = 0,
    animal_size: int = 48,
) -> None:
    """Write a re-identification set as Wild Me's COCO export (images, annotations with `name` = individual).

    `n_individuals` individuals with 3-6 photos each (each individual its own colour and
    stripe style) plus `n_singletons` photographed once; ids and file names as LILA's
    (`root/images_dir/000000000001.jpg`, JSON at `root/json_path`). Without `scene` a photo is
    the animal (bbox = the whole image, as Beluga's crops); with `scene = (width, height)`
    the animal is pasted at a random spot of a noisy scene and its bbox says where, and
    every `pair_every`-th scene holds a second animal (another individual), so only the
    crops tell them apart (animals are `animal_size` pixels square). With `shuffle_labels`, names are permuted among the annotations
    after drawing, so no photo carries its individual's signal.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    counts = [int(c) for c in rng.integers(3, 7, size=n_individuals)] + [1] * n_singletons
    names = [example_id(rng).replace("-", "")[:16] for _ in counts]  # Wild Me names are hex ids
    images: list[dict] = []
    annotations: list[dict] = []
    for label in (label for label, n in enumerate(counts) for _ in range(n)):
        k = len(images) + 1
        animal = draw(rng, group, label, size=animal_size, strength=0.75)
        who, img, boxes = [label], animal, [(0, 0, animal.width, animal.height)]
        if scene is not None:
            if pair_every and k % pair_every == 0:  # a second animal: another individual photographed more than once
                who.append(int(rng.choice([o for o in range(n_individuals) if o != label])))
            img, boxes = draw(rng, group + 1, 0, size=max(scene), strength=0.0).crop((0, 0, *scene)), []
            for j, individual in enumerate(who):
                piece = animal if j == 0 else draw(rng, group, individual, size=animal_size, strength=0.75)
                x, y = int(rng.integers(0, scene[0] - piece.width + 1)), int(rng.integers(0, scene[1] - piece.height + 1))
                img.paste(piece, (x, y))
                boxes.append((x, y, piece.width, piece.height))
        file_name = f"{k:012d}.jpg"
        h, w = save_jpeg(img, root / images_dir / file_name)
        images.append({"id": k, "file_name": file_name, "width": w, "height": h, "date_captured": "2017-08-01 12:00:00"})
        for individual, (x, y, bw, bh) in zip(who, boxes):
            annotations.append({
                "id": len(annotations) + 1, "image_id": k, "category_id": 0, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], "viewpoint": viewpoints[k % len(viewpoints)],
                "name": names[individual],
            })  # fmt: skip
    if shuffle_labels:
        shuffled = [a["name"] for a in annotations]
        for a, j in zip(annotations, rng.permutation(len(shuffled))):
            a["name"] = shuffled[j]
    doc = {
        "info": {"description": f"biobench fixture in the {dataset} COCO layout", "year": 2022},
        "licenses": [],
        "categories": [{"id": 0, "name": category, "supercategory": "animal"}],
        "images": images,
        "annotations": annotations,
    }
    (root / json_path).parent.mkdir(parents=True, exist_ok=True)
    (root / json_path).write_text(json.dumps(doc, indent=1))
