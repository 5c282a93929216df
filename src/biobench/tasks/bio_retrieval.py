"""BioCAP's text-image retrieval: Cornell bird (Macaulay Library) and PlantID captions, Recall@1/5/10 both ways.

Zhang et al. "BioCAP: Exploiting Synthetic Captions Beyond Labels in Biological Foundation
Models." 2025 (https://github.com/Imageomics/biocap, `data/retrieval_annotations/`). The CSVs
list images by URL with an md5, to be fetched by the user; `biobench download` does it
(resuming, verifying each md5, reporting failures).

Data layout:

```
DIR/cornell_bird.csv | DIR/plantID.csv    [index,]id,source_url,captions,md5  (one caption per image)
DIR/images/<id>.jpg                        the images (any image extension), as downloaded
```

Protocol (the text route, `method = "zero-shot"` models): every image against every caption by
cosine similarity; image->text and text->image Recall@k for k = 1, 5, 10 (a query is a hit when
one of its positives is in its top k, ties broken by list order: `biobench.ranking`). Headline:
the mean of the six recalls; per-query scores (the mean over k of the hits) are stored, two per
row (`i2t:ID`, `t2i:ID`), and the interval resamples queries. Sub-scores: each recall.
Bad inputs: a missing CSV or column, a repeated id, an empty caption are `DataError`s naming the
line; a row whose image is missing, or whose file fails its md5 (with `check_md5`), is a
counted, logged skip (`Examples.skipped`: "image missing" / "md5 differs" -> count, stored in the
sub-scores as `skipped`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from biobench import fixtures, ranking, stats
from biobench.download import fetch_many, md5sum
from biobench.errors import DataError
from biobench.evaluation import TaskReport
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import IMAGE_EXTENSIONS
from biobench.layouts.tables import read_csv, require_filled, require_unique
from biobench.metrics import Metric
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

VERSION = 1
CITATION = """@article{zhang2025biocap,
  title={{BioCAP}: Exploiting Synthetic Captions Beyond Labels in Biological Foundation Models},
  author={Zhang, Ziheng and Gu, Jianyang and Stevens, Samuel and others},
  journal={arXiv preprint},
  year={2025}
}"""
CSVS = {"cornell-bird-retrieval": "cornell_bird.csv", "plantid-retrieval": "plantID.csv"}
KS = (1, 5, 10)
MEAN_RECALL = Metric("mean_recall")
"""Mean of image->text and text->image Recall@1/5/10; per-query scores stored, interval by resampling queries."""


@dataclasses.dataclass(frozen=True)
class Options:
    data: Path = Path(".")
    """The folder holding the CSV and images/."""
    check_md5: bool = True
    """Skip (and count) images whose md5 differs from the CSV's."""


def _image(data: Path, image_id: str) -> Path | None:
    for path in sorted((data / "images").glob(f"{image_id}.*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return path
    return None


def make_read(name: str):
    def read(options: Options) -> Examples:
        data, csv = Path(options.data), Path(options.data) / CSVS[name]
        df = read_csv(name, data, csv, ("id", "captions", "md5"))
        require_filled(name, df, csv, ("id", "captions"))
        require_unique(name, df, csv, "id", "image id")
        keep, paths, skipped, counts = [], [], [], {"image missing": 0, "md5 differs": 0}
        for i, row in enumerate(df.iter_rows(named=True)):
            path = _image(data, row["id"])
            if path is None or (options.check_md5 and row["md5"] and md5sum(path) != row["md5"].strip().lower()):
                reason = "image missing" if path is None else "md5 differs"
                counts[reason] += 1
                skipped.append(f"line {row['_line']} ({row['id']}: {reason})")
                continue
            keep.append(i)
            paths.append(path)
        if skipped:
            logger.warning("%s: skipped %d of %d rows of %s, e.g. %s; rerun `biobench download %s` to fetch them.",
                           name, len(skipped), df.height, csv, skipped[0], name)  # fmt: skip
        if not keep:
            raise DataError(f"{name}: none of the {df.height} images {csv} lists is in {data / 'images'}; run `biobench download {name}`.")
        rows = df[keep]
        images = ImageSet(name, rows["id"].to_list(), paths)
        return one_per_image(images, np.zeros(len(keep)), ["test"] * len(keep), columns={"caption": rows["captions"].to_list()},
                             skipped={k: v for k, v in counts.items() if v})  # fmt: skip

    return read


def recalls(sims: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query hits of image i <-> caption i at each k, both directions."""
    positives = np.eye(len(sims), dtype=bool)
    return {f"{d}@{k}": ranking.recall_hits(s, positives, k) for d, s in (("i2t", sims), ("t2i", sims.T)) for k in KS}


def evaluate_text(options: Options, examples: Examples, features, encode, ctx) -> TaskReport:
    start = time.perf_counter()
    table = examples.table
    x = np.asarray(features, dtype=np.float64)[table["image"].to_numpy()]
    x /= np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    sims = x @ np.asarray(encode(table["caption"].to_list()), dtype=np.float64).T
    hits = recalls(sims)
    ids, scores, infos = [], [], []
    chance = float(np.mean([ranking.random_recall(len(sims), np.ones(1), k)[0] for k in KS]))
    for d, s in (("i2t", sims), ("t2i", sims.T)):
        mine = np.mean([hits[f"{d}@{k}"] for k in KS], axis=0)
        best = np.argmax(s, axis=1)
        for i, image_id in enumerate(table["id"]):
            ids.append(f"{d}:{image_id}")
            scores.append(float(mine[i]))
            infos.append({"direction": d, "label": image_id, "pred": table["id"][int(best[i])], "chance": chance})
    ci = stats.mean_ci(np.asarray(scores), n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    sub = {"recall": {k: float(v.mean()) for k, v in hits.items()}}  # the reader's skips join them in the routes
    return TaskReport(MEAN_RECALL.name, ci.estimate, ci.low, ci.high, 0, ids, np.asarray(scores), infos, sub,
                      seconds_score=time.perf_counter() - start)  # fmt: skip


def make_download(name: str):
    def download(root: Path) -> None:
        csv = Path(root) / CSVS[name]
        if not csv.is_file():
            raise DataError(f"{name}: place {CSVS[name]} (from github.com/Imageomics/biocap, data/retrieval_annotations/) in {root}, "
                            f"then rerun `biobench download {name} --dir {root}` to fetch its images.")  # fmt: skip
        df = read_csv(name, Path(root), csv, ("id", "source_url", "md5"))
        jobs = [(u, Path(root) / "images" / f"{i}.jpg", m or None) for i, u, m in zip(df["id"], df["source_url"], df["md5"]) if u]
        fetch_many(f"{name} images", jobs, workers=8)

    return download


def make_fixture(name: str):
    def fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
        """24 coloured images, each captioned with its colour (shuffled: captions permuted), CSV with real md5s."""
        rng, root = np.random.default_rng(seed), Path(root)
        taxa = fixtures.COLOURED_TAXA
        order = rng.permutation(24) if shuffle_labels else np.arange(24)
        lines = [",id,source_url,captions,md5"]
        for i in range(24):
            fixtures.save_jpeg(fixtures.colour_image(rng, taxa[i % len(taxa)][4]), root / "images" / f"{1000 + i}.jpg")
        for i in range(24):
            _, genus, epithet, common, _ = taxa[order[i] % len(taxa)]
            md5 = md5sum(root / "images" / f"{1000 + i}.jpg")
            lines.append(f'{i},{1000 + i},https://example.org/asset/{1000 + i},"{genus} {epithet}, a {common} seen in the field.",{md5}')
        (root / CSVS[name]).write_text("\n".join(lines) + "\n")

    return fixture


for _name in CSVS:
    register_task(TaskSpec(
        _name, VERSION, CITATION, Options, make_read(_name), make_fixture(_name), download=make_download(_name), routes=("text",),
        text=evaluate_text, metric=MEAN_RECALL, uses_n_train=False, kind="retrieval",
    ))  # fmt: skip
