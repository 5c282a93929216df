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

The MLLM route (`method = "mllm"` models) re-ranks the same candidates as INQUIRE's paper
does with GPT-4o: each candidate's image with `PROMPT` ('Does this picture show exactly
"QUERY"? Answer ... "Yes" or "No" ...'), asking for the first token's top log-probabilities.
A candidate scores P(yes) / (P(yes) + P(no)) where the provider returns them, else 1 for an
answer starting "yes" and 0 otherwise (`yes_score`); ties (every 0/1 answer) are broken by
candidate order, the earlier candidate in the dataset's list ranking first (`break_ties`), so
AP, nDCG and MRR see one strict ranking. Answers are cached with every other MLLM answer
(the results database, keyed by model and request), so a rerun pays nothing twice. Its rows
share the task's column with the CLIP rows (same metric, same queries); the sub-scores add how
many candidates were scored by log-probabilities, by the answer, unparsed or failed (scored 0).
"""

from __future__ import annotations

import dataclasses
import logging
import re
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


def queries_of(examples: Examples) -> tuple[list[str], list[str]]:
    """The queries with candidates (in order of appearance), and those the query list names without any (logged)."""
    queries = examples.table["subtask"].unique(maintain_order=True).to_list()
    listed = list(examples.classnames.get("", ()))
    no_candidates = [q for q in listed if q not in set(queries)]
    if no_candidates:
        logger.warning(
            "%s: %d listed quer(ies) have no candidate images and are skipped, e.g. %r.", NAME, len(no_candidates), no_candidates[0]
        )
    if not queries:
        raise DataError(f"{NAME}: no query has candidates.")
    return queries, no_candidates


def evaluate_text(options: Options, examples: Examples, features, encode, ctx) -> TaskReport:
    start = time.perf_counter()
    table = examples.table
    x = np.asarray(features, dtype=np.float64)[table["image"].to_numpy()]
    x /= np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    queries, no_candidates = queries_of(examples)
    q_emb = np.asarray(encode(queries), dtype=np.float64)
    index = {q: i for i, q in enumerate(queries)}
    row_scores = np.einsum("nd,nd->n", x, q_emb[[index[q] for q in table["subtask"].to_list()]])
    return ranked_report(examples, queries, no_candidates, row_scores, [{} for _ in queries], ctx, start)


def ranked_report(examples: Examples, queries, no_candidates, row_scores, extra_info, ctx, start, **report) -> TaskReport:
    """Per query: its candidates ranked by `row_scores` (one per table row), AP / nDCG / MRR, then the mean AP with
    its interval over queries and the per-supercategory breakdown (both routes score this way)."""
    table = examples.table
    subtask, labels, supercat = table["subtask"].to_numpy(), examples.labels(), table["supercategory"].to_list()
    ids, scores, infos = [], [], []
    for query, extra in zip(queries, extra_info, strict=True):
        rows = np.flatnonzero(subtask == query)
        sims, y = row_scores[rows], labels[rows]
        ap, nd, rr = ranking.ap(y, sims), ranking.ndcg(y, sims), ranking.mrr(y, sims)
        best = table["id"][int(rows[np.argmax(sims)])].split("\x1f")[1]
        ids.append(query)
        scores.append(ap)
        infos.append({"query": query, "supercategory": supercat[rows[0]], "label": int(y.sum()), "pred": best, "ndcg": nd, "mrr": rr,
                      "n_candidates": int(len(rows)), "chance": ranking.random_ap(len(rows), int(y.sum())), **extra})  # fmt: skip
    ap_scores = np.asarray(scores)
    ci = stats.mean_ci(ap_scores, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    per: dict[str, dict] = {}
    for sc in sorted({i["supercategory"] or "(none)" for i in infos}):
        mine = [i for i, info in enumerate(infos) if (info["supercategory"] or "(none)") == sc]
        per[sc] = {"ap": float(ap_scores[mine].mean()), "ndcg": float(np.mean([infos[i]["ndcg"] for i in mine])),
                   "mrr": float(np.mean([infos[i]["mrr"] for i in mine])), "n_test": len(mine)}  # fmt: skip
    sub = {"metrics": {"ndcg": float(np.mean([i["ndcg"] for i in infos])), "mrr": float(np.mean([i["mrr"] for i in infos]))},
           "supercategory": per, "skipped": {"no candidates": len(no_candidates)}}  # fmt: skip
    return TaskReport(AP.name, ci.estimate, ci.low, ci.high, 0, ids, ap_scores, infos, sub, seconds_score=time.perf_counter() - start,
                      **report)  # fmt: skip


PROMPT = 'Does this picture show exactly "{query}"?\nAnswer the question with either "Yes" or "No" and nothing else.'
"""The relevance question, INQUIRE's for GPT-4 models (`src/lmm_utils.py`, `get_lmm_prompt`)."""
TOP_LOGPROBS = 10
"""Alternatives of the answer's first token asked for (OpenAI allows up to 20)."""


def yes_score(answer) -> tuple[float, str]:
    """A candidate's relevance from one answer, and how it was read:

    - 'logprobs': P(yes) / (P(yes) + P(no)) over the first token's top alternatives (tokens compared stripped and
      case-folded, each side's probabilities summed, as INQUIRE's `convert_gpt_response_to_preds` does; only one side
      among them: 1 or 0);
    - 'answer': without log-probabilities (or with neither word among them), 1.0 for an answer starting "yes", 0.0 for "no";
    - 'unparsed' / 'failed': anything else, or no answer, scores 0.0 (counted in the sub-scores).
    """
    if answer.top_logprobs:
        p = {"yes": 0.0, "no": 0.0}
        for token, logprob in answer.top_logprobs:
            word = token.strip().strip(".,!\"'").casefold()
            if word in p:
                p[word] += float(np.exp(logprob))
        if p["yes"] + p["no"] > 0:
            return p["yes"] / (p["yes"] + p["no"]), "logprobs"
    if answer.text is None:
        return 0.0, "failed"
    words = re.findall(r"[a-z]+", answer.text.casefold())
    if words and words[0] in ("yes", "no"):
        return float(words[0] == "yes"), "answer"
    return 0.0, "unparsed"


def break_ties(scores: np.ndarray) -> np.ndarray:
    """Distinct scores in the same order, ties broken by candidate order (the earlier candidate ranks first):
    n for the best candidate down to 1, so AP, nDCG and MRR all see one strict ranking."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    out = np.empty(len(scores))
    out[order] = np.arange(len(scores), 0, -1, dtype=np.float64)
    return out


def evaluate_mllm(options: Options, examples: Examples, client, ctx) -> TaskReport:
    """The MLLM route: each candidate's relevance question (`PROMPT`, the image, asking for `TOP_LOGPROBS` alternatives),
    answers cached like every MLLM answer; candidates ranked by `yes_score`, ties by candidate order (`break_ties`)."""
    from biobench.mllm.prompts import encode_image

    start = time.perf_counter()
    table = examples.table
    queries, no_candidates = queries_of(examples)
    paths, image = examples.images.paths, table["image"].to_numpy()
    side = client.model.max_image_side
    subtask_list = table["subtask"].to_list()
    answers: list = [None] * table.height
    for query in queries:  # one query's candidates at a time: only 100 encoded images in memory
        rows = [r for r, q in enumerate(subtask_list) if q == query]
        requests = []
        for r in rows:
            content = [{"type": "image_url", "image_url": {"url": encode_image(paths[image[r]], max_side=side)}},
                       {"type": "text", "text": PROMPT.format(query=query)}]  # fmt: skip
            requests.append([{"role": "user", "content": content}])
        for r, answer in zip(rows, client.answer_all(requests, top_logprobs=TOP_LOGPROBS), strict=True):
            answers[r] = answer
    read = [yes_score(a) for a in answers]
    if all(how == "failed" for _, how in read):
        from biobench.errors import BiobenchError

        first = next((a.error for a in answers if a.error), "no answer")
        raise BiobenchError(f"{NAME}: every one of {len(answers)} requests failed; the first because {first}")
    raw = np.asarray([s for s, _ in read])
    row_scores = np.empty(len(raw))
    subtask = table["subtask"].to_numpy()
    extra = []
    for query in queries:
        rows = np.flatnonzero(subtask == query)
        row_scores[rows] = break_ties(raw[rows])
        hows = [read[r][1] for r in rows]
        extra.append({"yes_scores": raw[rows].round(6).tolist(), "scored_by": {h: hows.count(h) for h in sorted(set(hows))},
                      "cost_usd": sum(answers[r].cost_usd or 0.0 for r in rows)})  # fmt: skip
    costs = [a.cost_usd for a in answers if a.error is None]
    answered = [how for _, how in read if how != "failed"]
    report = ranked_report(
        examples, queries, no_candidates, row_scores, extra, ctx, start,
        cost_usd=None if any(c is None for c in costs) else float(sum(costs)),
        n_failed=sum(how == "failed" for _, how in read),
        parse_rate=float(np.mean([h != "unparsed" for h in answered])) if answered else 0.0,
    )  # fmt: skip
    hows = [how for _, how in read]
    sub = {**report.sub_scores, "scored_by": {h: hows.count(h) for h in ("logprobs", "answer", "unparsed", "failed")}}
    return dataclasses.replace(report, sub_scores=sub)


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
    NAME, VERSION, CITATION, Options, read, make_fixture, download=download, routes=("text", "mllm"), text=evaluate_text,
    mllm=evaluate_mllm, metric=AP,
    uses_n_train=False, kind="retrieval",
))  # fmt: skip
