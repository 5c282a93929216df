"""MammalNet: which of 12 behaviours (eat, groom, fight, ...) does a short video of a mammal show?

Chen, Hu, Coker, Berumen, Costelloe, Beery, Rohrbach and Elhoseiny. "MammalNet: A
Large-Scale Video Benchmark for Mammal Recognition and Behavior Understanding." CVPR 2023.
https://github.com/Vision-CAIR/MammalNet : YouTube clips of 173 mammal genera, trimmed to
one annotated behaviour each.

Data layout (the dataset's own archives, `trimmed_video.tar.gz` and `annotation.tar`):

```
DIR/annotation/composition/{train,test}.csv   no header, space-separated, one clip a line:
                                              trimmed_videos/<clip>.mp4 <behaviour id> <genus id>
DIR/annotation/behavior_to_id.txt             <behaviour name><TAB><id> (names default to the ids)
DIR/trimmed_video/<clip>.mp4                  the clips (DIR/trimmed_videos/<clip>.mp4, the CSVs' own path, also works)
DIR/frames/<n_frames>/<clip>/frame_01.jpg...  the frame cache biobench writes on the first read (`biobench.video`)
```

Protocol (the original biobench's): from each clip, `n_frames` = 32 frames evenly spaced
from its first (stride: the clip's frame count // 32), decoded once into the frame cache;
each frame is embedded and a clip's feature is the max (or mean) over its frames. Logistic
regression (the original's code; its docstring says nearest centroid: `probe =
"simpleshot"`) fits the train.csv clips (label: the behaviour) and predicts test.csv's.
`n_train` is a seeded class-balanced number of training clips. Metric: macro-F1 over the
behaviours in the test set, with a class-stratified bootstrap interval; sub-scores per behaviour.

Bad inputs: a missing CSV, a line with an empty or non-integer field or an unknown behaviour
id, a clip listed twice, and a listed video missing on disk are `DataError`s naming the file
and line. A video that cannot be decoded or has fewer than `n_frames` frames is skipped,
counted and logged (and remembered beside the frame cache, so it is not decoded again).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from PIL import Image

from biobench import fixtures, video
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.tables import integers, read_csv, require_filled
from biobench.metrics import MACRO_F1
from biobench.probes import Logistic, SimpleShot
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "mammalnet"
VERSION = 1
CITATION = """@inproceedings{chen2023mammalnet,
  title={MammalNet: A Large-Scale Video Benchmark for Mammal Recognition and Behavior Understanding},
  author={Chen, Jun and Hu, Ming and Coker, Darren J. and Berumen, Michael L. and Costelloe, Blair and Beery, Sara
          and Rohrbach, Anna and Elhoseiny, Mohamed},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={13052--13061},
  year={2023}
}"""

COLUMNS = ("path", "behaviour_id", "genus_id")
SPLITS = {"train": "train", "test": "test"}
"""Split -> annotation/composition/ CSV stem (val.csv is not used, as in the original)."""
VIDEO_DIR = "trimmed_video"


@dataclasses.dataclass(frozen=True)
class Options:
    """MammalNet options, from the config file's `[mammalnet]` table."""

    data: Path
    """Directory holding annotation/ and trimmed_video/ (frames/ is written there)."""
    n_frames: int = 32
    """Frames sampled per clip, evenly spaced from its first."""
    pool: Literal["max", "mean"] = "max"
    """How a clip's frame features combine (the original: max)."""
    probe: Literal["logistic", "simpleshot"] = "logistic"
    """Logistic regression (the original's code) or nearest centroid (its docstring)."""


def behaviour_names(data: Path) -> dict[int, str]:
    """Behaviour id -> name from annotation/behavior_to_id.txt, when it is there."""
    path = Path(data) / "annotation" / "behavior_to_id.txt"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        name, _, idx = line.strip().rpartition("\t")
        if not line.strip():
            continue
        if not name or not idx.strip().isdigit():
            raise DataError(f"{NAME}: {path} line {n}: expected '<behaviour name><TAB><id>', got {line!r}.")
        out[int(idx)] = name.strip()
    return out


def video_path(data: Path, rel: str) -> Path:
    """DIR/trimmed_video/<file> (where the archive unpacks), else DIR/<rel> (the CSV's own path) when only that exists."""
    unpacked = data / VIDEO_DIR / Path(rel).name
    return data / rel if not unpacked.is_file() and (data / rel).is_file() else unpacked


def read(options: Options) -> Examples:
    """One pooled example per decodable clip: its sampled frames, label = behaviour id."""
    data = Path(options.data)
    names = behaviour_names(data)
    parts = []
    for split, stem in SPLITS.items():
        csv = data / "annotation" / "composition" / f"{stem}.csv"
        df = read_csv(NAME, data, csv, COLUMNS, separator=" ", names=COLUMNS)
        require_filled(NAME, df, csv, COLUMNS)
        df = integers(NAME, df, csv, ("behaviour_id", "genus_id"))
        unknown = df.filter(~pl.col("behaviour_id").is_in(list(names))) if names else df.head(0)
        if unknown.height:
            row = unknown.row(0, named=True)
            raise DataError(f"{NAME}: {csv} line {row['_line']}: behaviour id {row['behaviour_id']} is not in behavior_to_id.txt.")
        parts.append(df.with_columns(split=pl.lit(split), csv=pl.lit(str(csv)), clip=pl.col("path").str.split("/").list.last()))
    df = pl.concat(parts).with_columns(clip=pl.col("clip").str.replace(r"\.[^.]*$", ""))
    dupes = df.filter(pl.col("clip").is_duplicated())
    if dupes.height:
        where = ", ".join(f"{c} line {n}" for c, n in zip(dupes["csv"][:3], dupes["_line"][:3]))
        raise DataError(f"{NAME}: clip {dupes['clip'][0]} is listed more than once ({where}); keep one line per clip.")
    videos = [video_path(data, rel) for rel in df["path"]]
    require_files(NAME, videos, [f"{Path(c).name} line {n}" for c, n in zip(df["csv"], df["_line"])], data / "annotation" / "composition")
    cache = data / "frames" / str(options.n_frames)
    frames = video.cache_frames(NAME, [(v, cache / c) for v, c in zip(videos, df["clip"])], options.n_frames)
    n_labels = max([*names, *df["behaviour_id"].to_list()]) + 1
    classnames = tuple(names.get(i, str(i)) for i in range(n_labels))
    rows, ids, paths = [], [], []  # rows: (id, image, label, split, behaviour)
    for clip, label, split, got in zip(df["clip"], df["behaviour_id"], df["split"], frames):
        for p in got or ():
            rows.append((clip, len(paths), label, split, classnames[label]))
            ids.append(f"{clip}/{p.name}")
            paths.append(p)
    if not rows:
        raise DataError(f"{NAME}: none of the {df.height} clips in {data} could be decoded; see the log for why.")
    table = pl.DataFrame(rows, schema=["id", "image", "label", "split", "behaviour"], orient="row")
    images = ImageSet(NAME, ids, paths)
    return Examples(images, table, {"": classnames}, info=("behaviour",), pool=options.pool)


def prepare_frames(root: Path) -> None:
    """After the download: decode the default sampling's frames once (what the first read would do)."""
    read(Options(data=Path(root)))


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train: int = 3, n_test: int = 3) -> None:
    """Write MammalNet-format annotations and H.264 clips of 32-40 frames: 3 of the 12 behaviours, `n_train` /
    `n_test` clips each, each clip one drawn scene of its behaviour with fresh noise per frame; plus a test clip
    too short to sample and a training clip that is not a video (both skipped by `read`).

    With `shuffle_labels`, behaviour ids are permuted among a split's clips after the clips are drawn.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    (root / "annotation" / "composition").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / "behavior_to_id.txt").write_text("".join(f"{b}\t{i}\n" for i, b in enumerate(BEHAVIOURS)))
    used, k = (1, 6, 10), 0  # drink water, groom, sleep: label ids need not be contiguous
    for stem, n in (("train", n_train), ("test", n_test)):
        clips = [b for b in used for _ in range(n)]
        labels = [clips[j] for j in rng.permutation(len(clips))] if shuffle_labels else clips
        lines = []
        for b, shown in zip(labels, clips):
            k += 1
            clip = f"{fixtures.example_id(rng)[:11]}_{k}"  # YouTube ids, _k for a video's k-th segment
            scene = np.asarray(fixtures.draw(rng, 11, shown, size=32, strength=0.7), dtype=np.float32)
            frames = [Image.fromarray(np.clip(scene + rng.normal(0, 8, scene.shape), 0, 255).astype(np.uint8)) for _ in range(32 + k % 9)]
            fixtures.save_mp4(frames, root / VIDEO_DIR / f"{clip}.mp4")
            lines.append(f"trimmed_videos/{clip}.mp4 {b} {k % 5}")
        bad = f"broken_{stem}"
        if stem == "train":  # a clip that is not a video
            (root / VIDEO_DIR / f"{bad}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
        else:  # a clip shorter than 32 frames
            fixtures.save_mp4([fixtures.draw(rng, 11, used[0], size=32)] * 12, root / VIDEO_DIR / f"{bad}.mp4")
        lines.append(f"trimmed_videos/{bad}.mp4 {used[0]} 0")
        (root / "annotation" / "composition" / f"{stem}.csv").write_text("\n".join(lines) + "\n")


BEHAVIOURS = ("eat food", "drink water", "hunt", "mate", "feed baby", "give birth", "groom", "fight", "urinate", "defecate",
              "sleep", "vomit")  # fmt: skip
"""MammalNet's 12 behaviours (the paper's list; the fixture's id order is made up, the real one is in behavior_to_id.txt)."""

_S3 = "https://mammalnet.s3.amazonaws.com"
RESOURCES = (
    Resource(f"{_S3}/annotation.tar", "annotation.tar", None,
             ("annotation/behavior_to_id.txt", "annotation/composition/train.csv", "annotation/composition/test.csv")),
    Resource(f"{_S3}/trimmed_video.tar.gz", "trimmed_video.tar.gz", None, (f"{VIDEO_DIR}/*.mp4",)),
)  # fmt: skip
"""The dataset README's links: annotations and the trimmed clips (about 148 GB, unpacks to trimmed_video/); no md5 is published."""


def _probe(options: Options):
    return Logistic() if options.probe == "logistic" else SimpleShot()


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, download=prepare_frames,
                              probe=_probe, metric=MACRO_F1, kind="behaviour"))  # fmt: skip
