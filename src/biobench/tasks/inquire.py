"""INQUIRE-Rerank: re-rank 100 fixed iNaturalist candidates per natural-language query by image-text similarity.

Vendrow, Pantazis, Shepard, Brostow, Jones, Mac Aodha, Beery, Van Horn. "INQUIRE: A Natural
World Text-to-Image Retrieval Benchmark." NeurIPS 2024 Datasets and Benchmarks.
https://github.com/inquire-benchmark/INQUIRE; data: huggingface.co/datasets/evendrow/INQUIRE-Rerank.

Data layout: a local copy of the Hugging Face dataset (`save_to_disk`, or the Hub's parquet
shards, `biobench.layouts.hf`), one row per (query, candidate image):

```
DIR/data/<split>-0000i-of-0000n.parquet   query, relevant (0/1), inat24_image_id, image, supercategory
                                          (or DIR/dataset_dict.json + DIR/<split>/*.arrow from save_to_disk)
DIR/inquire_queries_<test|val>.csv        optional: query_id, query_text, supercategory, category, iconic_group
                                          (INQUIRE's query lists, data/inquire/ of its repository; `val` for validation)
```

The Hub card (checked against it) names the splits `validation` (40 queries x 100) and `test`
(160 x 100) and has a `supercategory` string column (Appearance, Behavior, Context, Species),
beside `category`, `iconic_group`, `clip_score`, `inat24_file_name` and others we ignore.

Protocol (the text route, `method = "zero-shot"` models): per query, every candidate is scored
by the cosine similarity of its image and the query text; AP, nDCG and MRR over the query's
candidates as INQUIRE's `metrics.py` defines them (`biobench.ranking`: AP normalised by
min(positives, k), nDCG padded with unretrieved positives; with a fixed candidate list every
positive is retrieved). Headline: mean AP over queries, interval by resampling queries;
sub-scores: nDCG and MRR (`metrics`), and all three per supercategory (Appearance, Behavior,
Context, Species). A query listed in the queries CSV with no candidate rows is a counted,
logged skip (`skipped` in the sub-scores); a query whose candidates are all irrelevant scores
0, as in INQUIRE. Missing columns or shards are `DataError`s naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from biobench import fixtures, ranking, stats
from biobench.errors import DataError
from biobench.evaluation import TaskReport
from biobench.examples import Examples
from biobench.layouts import hf
from biobench.layouts.tables import read_csv
from biobench.metrics import Metric
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "inquire-rerank"
VERSION = 1
CITATION = """@inproceedings{vendrow2024inquire,
  title={{INQUIRE}: A Natural World Text-to-Image Retrieval Benchmark},
  author={Vendrow, Edward and Pantazis, Omiros and Shepard, Alexander and Brostow, Gabriel and Jones, Kate E and Mac Aodha, Oisin and Beery, Sara and Van Horn, Grant},
  booktitle={NeurIPS Datasets and Benchmarks Track},
  year={2024}
}"""
REPO = "evendrow/INQUIRE-Rerank"
COLUMNS = ("query", "relevant", "inat24_image_id", "supercategory")
QUERY_LISTS = {"test": "inquire_queries_test.csv", "validation": "inquire_queries_val.csv"}
"""Split -> INQUIRE's query list for it (the repository calls the validation split `val`)."""
AP = Metric("ap")
"""Mean over queries of INQUIRE's AP (per-query scores stored), interval by resampling queries."""


@dataclasses.dataclass(frozen=True)
class Options:
    data: Path = Path(".")
    """The local copy of evendrow/INQUIRE-Rerank."""
    split: Literal["test", "validation"] = "test"
    """Which split to score (INQUIRE reports test: 160 queries; validation: 40)."""


def read(options: Options) -> Examples:
    data = Path(options.data)
    found, rows = hf.read_split(NAME, data, options.split, COLUMNS)
    rows = rows.with_columns(pl.col("query").cast(pl.String), pl.col("relevant").cast(pl.Int64), pl.col("inat24_image_id").cast(pl.String))
    ids = [f"{q}\x1f{i}" for q, i in zip(rows["query"], rows["inat24_image_id"])]
    images = hf.table_images(NAME, rows, hf.image_column(NAME, found), [str(i) for i in range(rows.height)])
    listed = data / QUERY_LISTS[options.split]
    queries = tuple(read_csv(NAME, data, listed, ("query_text",))["query_text"].to_list()) if listed.is_file() else ()
    table = pl.DataFrame({
        "id": ids, "image": np.arange(rows.height), "label": rows["relevant"].to_numpy(), "split": ["test"] * rows.height,
        "subtask": rows["query"].to_list(), "supercategory": rows["supercategory"].cast(pl.String).to_list(),
    })  # fmt: skip
    return Examples(images, table, classnames={"": queries}, info=("supercategory",), subtask_label="query")


def evaluate_text(options: Options, examples: Examples, features, encode, ctx) -> TaskReport:
    start = time.perf_counter()
    table = examples.table
    x = np.asarray(features, dtype=np.float64)[table["image"].to_numpy()]
    x /= np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    queries = table["subtask"].unique(maintain_order=True).to_list()
    listed = list(examples.classnames.get("", ()))
    no_candidates = [q for q in listed if q not in set(queries)]
    if no_candidates:
        logger.warning(
            "%s: %d listed quer(ies) have no candidate images and are skipped, e.g. %r.", NAME, len(no_candidates), no_candidates[0]
        )
    q_emb = encode(queries)
    subtask, labels, supercat = table["subtask"].to_numpy(), examples.labels(), table["supercategory"].to_list()
    ids, scores, infos = [], [], []
    for qi, query in enumerate(queries):
        rows = np.flatnonzero(subtask == query)
        sims, y = x[rows] @ q_emb[qi], labels[rows]
        ap, nd, rr = ranking.ap(y, sims), ranking.ndcg(y, sims), ranking.mrr(y, sims)
        best = table["id"][int(rows[np.argmax(sims)])].split("\x1f")[1]
        ids.append(query)
        scores.append(ap)
        infos.append({"query": query, "supercategory": supercat[rows[0]], "label": int(y.sum()), "pred": best, "ndcg": nd, "mrr": rr,
                      "n_candidates": int(len(rows)), "chance": ranking.random_ap(len(rows), int(y.sum()))})  # fmt: skip
    if not ids:
        raise DataError(f"{NAME}: no query has candidates.")
    ap_scores = np.asarray(scores)
    ci = stats.mean_ci(ap_scores, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    per: dict[str, dict] = {}
    for sc in sorted({i["supercategory"] or "(none)" for i in infos}):
        mine = [i for i, info in enumerate(infos) if (info["supercategory"] or "(none)") == sc]
        per[sc] = {"ap": float(ap_scores[mine].mean()), "ndcg": float(np.mean([infos[i]["ndcg"] for i in mine])),
                   "mrr": float(np.mean([infos[i]["mrr"] for i in mine])), "n_test": len(mine)}  # fmt: skip
    sub = {"metrics": {"ndcg": float(np.mean([i["ndcg"] for i in infos])), "mrr": float(np.mean([i["mrr"] for i in infos]))},
           "supercategory": per, "skipped": {"no candidates": len(no_candidates)}}  # fmt: skip
    return TaskReport(AP.name, ci.estimate, ci.low, ci.high, 0, ids, ap_scores, infos, sub, seconds_score=time.perf_counter() - start)


def download(root: Path) -> None:
    if not hf.has_dataset(root):
        raise hf.hub_steps(
            NAME, root, REPO, "{dir}/data/test-00000-of-0000n.parquet (query, relevant, inat24_image_id, image, ...)", gated=False
        )


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Six queries naming a colour, 12 candidates each (4 of that colour relevant), as the Hub's parquet shards."""
    rng, root = np.random.default_rng(seed), Path(root)
    images, names, cols = [], [], {k: [] for k in ("query", "relevant", "inat24_image_id", "supercategory", "category")}
    supers = ("Appearance", "Behavior", "Context", "Species")
    for q, (colour, *_, common, _) in enumerate(fixtures.COLOURED_TAXA[:6]):
        relevant = np.r_[np.ones(4, int), np.zeros(8, int)]
        for j, rel in enumerate(rng.permutation(relevant) if shuffle_labels else relevant):
            other = fixtures.COLOURED_TAXA[(q + 1 + j % 5) % len(fixtures.COLOURED_TAXA)]
            images.append(fixtures.colour_image(rng, fixtures.COLOURED_TAXA[q][4] if j < 4 else other[4]))
            names.append(f"{q * 12 + j}.jpg")
            for k, v in zip(
                cols, (f"a {common} showing its {colour} plumage", int(rel), str(100000 + q * 12 + j), supers[q % 4], "fixture")
            ):
                cols[k].append(v)
    features = {
        "image": {"_type": "Image"},
        "query": {"_type": "Value", "dtype": "string"},
        "relevant": {"_type": "Value", "dtype": "int64"},
    }
    fixtures.write_hf_parquet(fixtures.hf_table(images, names, cols), root, "test", n_shards=2, features=features)


SPEC = register_task(TaskSpec(
    NAME, VERSION, CITATION, Options, read, make_fixture, download=download, routes=("text",), text=evaluate_text, metric=AP,
    uses_n_train=False, kind="retrieval",
))  # fmt: skip
