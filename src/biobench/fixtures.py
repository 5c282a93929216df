"""Generated images with a learnable signal, for fixtures in every task's real on-disk format.

An image is smooth random colour noise; its class shifts the mean colour towards a
class-specific hue and overlays stripes of a class-specific frequency and angle. Colour
histograms (`builtin:pixel-stats`) pick the signal up easily, so tests can demand
accuracy well above chance, and near chance once labels are shuffled. `reid_coco` writes
a whole re-identification set in Wild Me's COCO layout (LILA's Beluga and Leopard ID).

`hf_table`, `write_hf_parquet` and `write_hf_saved` write Hugging Face datasets (images
inside the tables) in the Hub's parquet layout and in `save_to_disk`'s, without `datasets`.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping, Sequence
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


def jpeg_bytes(img: Image.Image) -> bytes:
    """The image encoded as JPEG (quality 90), as Hugging Face image columns store it."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def hf_table(images: Sequence[Image.Image], names: Sequence[str], columns: Mapping[str, Sequence], image: str = "image"):
    """A pyarrow table as `datasets` writes one: `image` a struct {bytes: JPEG, path: names[i]}, then `columns`."""
    import pyarrow as pa

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    data = {image: pa.array([{"bytes": jpeg_bytes(im), "path": n} for im, n in zip(images, names)], type=struct)}
    return pa.table({**data, **{k: pa.array(list(v)) for k, v in columns.items()}})


def write_hf_parquet(table, root: Path, split: str, *, n_shards: int, features: Mapping, row_group_size: int = 8) -> None:
    """Write `table` as the Hub's parquet shards `root/data/<split>-0000i-of-0000n.parquet` (features in the metadata)."""
    import pyarrow.parquet as pq

    meta = {b"huggingface": json.dumps({"info": {"features": dict(features)}}).encode()}
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(int)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(n_shards):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part.replace_schema_metadata(meta), root / "data" / f"{split}-{i:05d}-of-{n_shards:05d}.parquet",
                       row_group_size=row_group_size)  # fmt: skip


def write_hf_saved(tables: Mapping[str, object], root: Path, *, n_shards: int, features: Mapping) -> None:
    """Write a DatasetDict as `save_to_disk` does: dataset_dict.json, and per split state.json,
    dataset_info.json and Arrow IPC stream shards `data-0000i-of-0000n.arrow`."""
    import pyarrow as pa
    import pyarrow.ipc

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": list(tables)}))
    for split, table in tables.items():
        folder = root / split
        folder.mkdir(exist_ok=True)
        bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(int)
        names = [f"data-{i:05d}-of-{n_shards:05d}.arrow" for i in range(n_shards)]
        for i, name in enumerate(names):
            with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), max_chunksize=8)
        state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "fixture", "_split": split}
        (folder / "state.json").write_text(json.dumps(state))
        (folder / "dataset_info.json").write_text(json.dumps({"features": dict(features), "splits": {split: {"name": split}}}))


def save_mp4(frames: Sequence[Image.Image], path: Path, *, fps: int = 10) -> None:
    """Write `frames` (RGB, equal even sizes) as an H.264 MP4 with PyAV (creating folders)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_image(img)))
        out.mux(stream.encode(None))


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


COLOURED_TAXA = (
    ("red", "Turdus", "ruber", "red thrush", (0.85, 0.1, 0.1)),
    ("blue", "Parus", "caeruleus", "blue tit", (0.15, 0.25, 0.85)),
    ("green", "Picus", "viridis", "green woodpecker", (0.15, 0.7, 0.2)),
    ("yellow", "Serinus", "flavus", "yellow canary", (0.95, 0.9, 0.15)),
    ("black", "Corvus", "niger", "black crow", (0.05, 0.05, 0.05)),
    ("white", "Egretta", "alba", "white egret", (0.95, 0.95, 0.95)),
    ("purple", "Porphyrio", "purpureus", "purple swamphen", (0.55, 0.2, 0.7)),
    ("orange", "Icterus", "aurantiacus", "orange oriole", (0.95, 0.55, 0.1)),
)
"""(colour, genus, epithet, common name, RGB): classes whose every name form names their colour, so that
`builtin:colour-clip` solves text-route fixtures (zero-shot, retrieval, re-ranking) drawn with `colour_image`."""


def colour_image(rng: np.random.Generator, rgb: Sequence[float], size: int = 32, share: float = 0.7) -> Image.Image:
    """An image mostly (`share` of its pixels, in blocks) of colour `rgb`, the rest random colours, plus noise."""
    blocks = rng.uniform(0.0, 1.0, size=(8, 8, 3))
    keep = rng.uniform(size=(8, 8)) < share
    blocks[keep] = rgb
    img = np.asarray(Image.fromarray((blocks * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)) / 255.0
    img = img + rng.normal(0.0, 0.03, size=img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def newt_like_features(seed: int, n_train: int = 110, n_test: int = 110, d: int = 32, positives: float = 0.5):
    """One NeWT-shaped binary task as features, already preprocessed as NeWT's recipe does (L2, centre on the training
    mean, L2): one informative direction of random strength plus an offset. Returns (x_train, y_train, x_test, y_test);
    the SVM-search equivalence test and `benchmarks/newt_search.py` draw the same problems."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = (rng.permutation(n) < round(positives * n)).astype(np.int64)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + rng.uniform(0.3, 2.5) * np.outer(2 * y - 1, w / np.linalg.norm(w)) + rng.normal(size=d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x -= x[:n_train].mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
