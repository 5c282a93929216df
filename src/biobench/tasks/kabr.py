"""KABR: which behaviour fills a short drone-video clip of one Kenyan zebra or giraffe?

Kholiavchenko et al. "KABR: In-Situ Dataset for Kenyan Animal Behavior Recognition from
Drone Videos." WACV Workshops (CV4Smalls) 2024. https://kabrdata.xyz/ ,
https://huggingface.co/datasets/imageomics/KABR . Mini-scenes (video cropped around one
animal) of giraffes, plains and Grevy's zebras, every frame labelled with one of 7
behaviours or 'Occluded'.

Data layout (the dataset's own, Charades format):

```
DIR/annotation/classes.json             {"Walk": 0, "Graze": 1, ...}: behaviour name -> index
DIR/annotation/{train,val}.csv          space-separated, one row per frame, in frame order:
                                        original_vido_id (sic) video_id frame_id path labels
DIR/dataset/image/<path>                frame image, e.g. G0001.1/1.jpg (path is relative to dataset/image/)
```

Protocol (the original biobench's): a clip is a `video_id`; clips under 16 frames are
dropped. From each clip, 16 frames 5 apart (the stride shrinks until 16 frames fit in
shorter clips) from a uniformly drawn start; the clip's label is the most common label of
those frames (ties: the smaller index), its feature the mean (or max) of their features.
SimpleShot on train.csv's clips, scored on val.csv's. Here the start comes from a
generator per clip (`task_rng(frame_seed, clip id)`), so it is reproducible and does not
depend on the other clips. Metric: accuracy, bootstrapped over whole original videos;
sub-scores per behaviour. `n_train` is a class-balanced number of training clips.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from jaxtyping import Int

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.tables import integers, read_csv, require_filled, require_values
from biobench.metrics import CLUSTERED_ACCURACY
from biobench.probes import SimpleShot
from biobench.sampling import task_rng
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "kabr"
VERSION = 1
CITATION = """@inproceedings{kholiavchenko2024kabr,
  title={KABR: In-Situ Dataset for Kenyan Animal Behavior Recognition from Drone Videos},
  author={Kholiavchenko, Maksim and Kline, Jenna and Ramirez, Michelle and Stevens, Sam and Sheets, Alec and Babu, Reshma
          and Banerji, Namrata and Campolongo, Elizabeth and Thompson, Matthew and Van Tiel, Nina and Miliko, Jackson
          and Bessa, Eduardo and Duporge, Isla and Berger-Wolf, Tanya and Rubenstein, Daniel and Stewart, Charles},
  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV) Workshops},
  pages={31--40},
  year={2024}
}"""

COLUMNS = ("original_vido_id", "video_id", "frame_id", "path", "labels")
SPLITS = (("train", "train"), ("test", "val"))
"""Split -> annotation CSV stem."""
IMAGE_DIR = Path("dataset/image")
N_FRAMES, EVERY = 16, 5
BEHAVIOURS = ("Walk", "Graze", "Browse", "Head Up", "Auto-Groom", "Trot", "Run", "Occluded")
"""The KABR ethogram (kabr-tools' classes.json), used when annotation/classes.json is absent."""


@dataclasses.dataclass(frozen=True)
class Options:
    """KABR options, from the config file's `[kabr]` table."""

    data: Path
    """Directory holding annotation/ and dataset/image/."""
    pool: Literal["mean", "max"] = "mean"
    """How a clip's 16 frame features combine (the seed: mean; the current original: max)."""
    frame_seed: int = 0
    """Seeds each clip's start frame (with the clip id)."""


def choose_frames(n: int, rng: np.random.Generator) -> Int[np.ndarray, " 16"]:
    """Positions of 16 frames `EVERY` apart (less in short clips) from a random start in a clip of `n >= 16` frames."""
    step = EVERY
    while (N_FRAMES - 1) * step + 1 > n:
        step -= 1
    return rng.integers(0, n - (N_FRAMES - 1) * step) + step * np.arange(N_FRAMES)


def behaviour_names(data: Path) -> tuple[str, ...]:
    """Behaviour names by index, from annotation/classes.json (name -> index) when it is there."""
    path = data / "annotation" / "classes.json"
    try:
        index = json.loads(path.read_text()) if path.is_file() else {n: i for i, n in enumerate(BEHAVIOURS)}
        if sorted(index.values()) == list(range(len(index))):
            return tuple(sorted(index, key=index.__getitem__))
    except (json.JSONDecodeError, TypeError, AttributeError):
        pass
    raise DataError(f'{NAME}: {path} must map each behaviour name to its index 0..K-1, like {{"Walk": 0, "Graze": 1}}.')


def read_frames(data: Path, csv: Path, n_classes: int) -> pl.DataFrame:
    """One annotation CSV, typed and checked: integer ids and labels, no missing frame, every frame on disk."""
    df = read_csv(NAME, data, csv, COLUMNS, separator=" ")
    require_filled(NAME, df, csv, ("original_vido_id", "path"))
    typed = integers(NAME, df, csv, ("video_id", "frame_id", "labels"))
    require_values(NAME, typed, csv, "labels", range(n_classes))
    # The original's check: the k-th row of a clip may not have a frame_id beyond k (a frame is missing).
    gap = typed.filter(pl.col("frame_id") > pl.int_range(1, pl.len() + 1).over("video_id"))
    if gap.height:
        row = gap.row(0, named=True)
        raise DataError(f"{NAME}: {csv} line {row['_line']}: video {row['video_id']} jumps to frame {row['frame_id']}; a frame is missing.")
    items = [f"video {v} frame {f}" for v, f in typed.select("video_id", "frame_id").iter_rows()]
    require_files(NAME, [data / IMAGE_DIR / p for p in typed["path"]], items, csv)
    return typed


def read(options: Options) -> Examples:
    """One row per (clip, chosen frame): id = split/video_id, label = the chosen frames' mode, group = original video."""
    data = Path(options.data)
    names = behaviour_names(data)
    image_of: dict[str, int] = {}
    rows = []  # (id, image, label, split, group, behaviour)
    for split, stem in SPLITS:
        csv = data / "annotation" / f"{stem}.csv"
        df, short = read_frames(data, csv, len(names)), 0
        for (video,), clip in df.group_by("video_id", maintain_order=True):
            if clip.height < N_FRAMES:
                short += 1
                continue
            clip_id = f"{stem}/{video}"
            chosen = choose_frames(clip.height, task_rng(options.frame_seed, clip_id))
            label = int(np.bincount(clip["labels"].to_numpy()[chosen]).argmax())  # ties: the smaller index, as torch.mode
            group = clip["original_vido_id"][0]
            for p in clip["path"].gather(chosen):
                rows.append((clip_id, image_of.setdefault(p, len(image_of)), label, split, group, names[label]))
        if short:
            logger.info("%s: dropped %d clips of %s with fewer than %d frames (as the original).", NAME, short, csv, N_FRAMES)
    images = ImageSet(NAME, list(image_of), [data / IMAGE_DIR / p for p in image_of])
    schema = {"id": pl.Utf8, "image": pl.Int64, "label": pl.Int64, "split": pl.Utf8, "group": pl.Utf8, "behaviour": pl.Utf8}
    table = pl.DataFrame(rows, schema=schema, orient="row")
    return Examples(images, table, {"": names}, info=("behaviour",), pool=options.pool)


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train: int = 4, n_test: int = 5) -> None:
    """Write a KABR-format dataset: 3 behaviours, `n_train`/`n_test` clips each of 16-18 frames (two clips per
    original video), a few frames per clip labelled (and drawn) as another behaviour, and one val clip too short to use.

    With `shuffle_labels`, clips' behaviours are permuted within each split after the frames are drawn.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    used, video = (0, 1, 3), 0  # Walk, Graze, Head Up: label indices need not be contiguous
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / "classes.json").write_text(json.dumps({n: i for i, n in enumerate(BEHAVIOURS)}))
    for stem, n in (("train", n_train), ("val", n_test)):
        clips = [b for b in used for _ in range(n)] + ([used[0]] if stem == "val" else [])
        frames = [np.full(int(rng.integers(16, 19)) if k < len(used) * n else 10, b) for k, b in enumerate(clips)]
        for shown, b in zip(frames, clips):  # a few frames of each clip show (and are labelled) another behaviour
            shown[rng.choice(len(shown), size=3, replace=False)] = rng.choice([c for c in used if c != b], size=3)
        labels = frames
        if shuffle_labels:  # each clip takes another clip's behaviour; its few off-behaviour frames keep theirs
            perm = rng.permutation(len(clips))
            labels = [np.where(shown == clips[i], clips[j], shown) for i, (shown, j) in enumerate(zip(frames, perm))]
        lines = [" ".join(COLUMNS)]
        for shown, labs in zip(frames, labels):
            video += 1
            orig = f"{('G', 'ZG', 'ZP')[(video + 1) // 2 % 3]}{(video + 1) // 2:04d}"  # two clips per original video
            folder = f"{orig}.{2 - video % 2}"
            for f, (s, lab) in enumerate(zip(shown, labs), start=1):
                fixtures.save_jpeg(fixtures.draw(rng, 0, int(s), strength=0.5), root / IMAGE_DIR / folder / f"{f}.jpg")
                lines.append(f"{orig} {video} {f} {folder}/{f}.jpg {int(lab)}")
        (root / "annotation" / f"{stem}.csv").write_text("\n".join(lines) + "\n")


BASE_URL = "https://huggingface.co/datasets/imageomics/KABR/resolve/main/KABR"
RESOURCES = (
    *(Resource(f"{BASE_URL}/annotation/{f}", f"annotation/{f}", None, (f"annotation/{f}",), extract=False)
      for f in ("classes.json", "train.csv", "val.csv")),
    # Each species' frames are one zip published in 2 GB pieces, with the whole zip's md5 beside them.
    *(Resource(tuple(f"{BASE_URL}/{IMAGE_DIR}/{sp}_part_a{c}" for c in letters), f"{sp}.zip", None, (f"{IMAGE_DIR}/*/*.jpg",),
               into=str(IMAGE_DIR), md5_url=f"{BASE_URL}/{IMAGE_DIR}/{sp}_md5.txt")
      for sp, letters in {"giraffes": "abcd", "zebras_grevys": "abcdefghijklm", "zebras_plains": "abcdefghijkl"}.items()),
)  # fmt: skip


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, probe=SimpleShot(),
                              metric=CLUSTERED_ACCURACY, kind="behaviour"))  # fmt: skip
