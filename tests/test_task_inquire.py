"""INQUIRE-Rerank: metrics against scikit-learn, skipped queries, download steps, and a mixed config end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from biobench import cli, ranking, report
from biobench.errors import DataError
from biobench.tasks import get_task


def inquire_reference(y, s, count_pos, k):
    """INQUIRE's metrics.py, written out independently with scikit-learn."""
    ap = average_precision_score(y[:k], s[:k]) * y[:k].sum() / min(count_pos, k) if y[:k].sum() > 0 else 0.0
    unknown = count_pos - int(y.sum())
    nd = ndcg_score([list(y) + [1] * unknown], [list(s) + [-100] * unknown], k=k)
    order = np.flip(np.argsort(s, kind="stable"))
    first = np.flatnonzero(y[order] == 1)
    return ap, nd, (1 / (first[0] + 1) if len(first) else 0.0)


@pytest.mark.parametrize("seed", range(20))
def test_ap_ndcg_mrr_equal_scikit_learn_references(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 100))
    y = (rng.uniform(size=n) < rng.uniform(0.05, 0.6)).astype(int)
    y[rng.integers(n)] = 1
    s = rng.normal(size=n) if seed % 2 else rng.integers(0, 4, size=n).astype(float)  # odd: continuous, even: many ties
    ap, nd, rr = inquire_reference(y, s, int(y.sum()), n)
    assert abs(ranking.ap(y, s) - ap) < 1e-12
    assert abs(ranking.ndcg(y, s) - nd) < 1e-12
    assert ranking.mrr(y, s) == rr
    extra = int(rng.integers(1, 5))  # positives that were never retrieved
    _, nd_missed, _ = inquire_reference(y, s, int(y.sum()) + extra, n)
    assert abs(ranking.ndcg(y, s, count_pos=int(y.sum()) + extra) - nd_missed) < 1e-12
    assert abs(ranking.ap(y, s, count_pos=int(y.sum()) + extra) - ap * y.sum() / min(y.sum() + extra, n)) < 1e-12


def test_random_ap_is_the_mean_ap_of_random_orders():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(4, int), np.zeros(8, int)]
    sim = np.mean([ranking.ap(y, rng.permutation(12).astype(float)) for _ in range(20000)])
    assert abs(ranking.random_ap(12, 4) - sim) < 0.01
    assert ranking.ap(np.zeros(5), np.arange(5.0)) == 0.0 and ranking.mrr(np.zeros(5), np.arange(5.0)) == 0.0


def run_text(tmp_path, data):
    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features
    from biobench.evaluation import EvalContext
    from biobench.routes import text
    from biobench.text_embed import get_text_features

    spec = get_task("inquire-rerank")
    opts = spec.options(data=data)
    ex = spec.read(opts)
    clip, cache = load_vision_backbone("builtin", "colour-clip"), FeatureCache(tmp_path / "cache")
    feats = get_features(clip, ex.images, cache, EmbedSettings(n_workers=0)).features
    return text.evaluate(spec, opts, ex, feats, lambda t: get_text_features(clip, list(t), cache).features, EvalContext(n_bootstrap=100))


def test_fixture_is_ranked_well_and_per_supercategory(tmp_path):
    get_task("inquire-rerank").fixture(tmp_path / "d")
    out = run_text(tmp_path, tmp_path / "d")
    assert out.score > 0.9 and out.n_test == 6
    assert set(out.sub_scores["supercategory"]) == {"Appearance", "Behavior", "Context", "Species"}
    assert out.sub_scores["skipped"] == {"no candidates": 0} and out.sub_scores["metrics"]["mrr"] == 1.0


def test_a_listed_query_without_candidates_is_a_counted_skip(tmp_path, caplog):
    get_task("inquire-rerank").fixture(tmp_path / "d")
    (tmp_path / "d" / "inquire_queries_test.csv").write_text(
        "query_id,query_text,supercategory\n1,a red thrush showing its red plumage,Appearance\n2,a lost query,Behavior\n"
    )
    out = run_text(tmp_path, tmp_path / "d")
    assert out.sub_scores["skipped"] == {"no candidates": 1} and out.n_test == 6
    assert "no candidate images" in caplog.text


def test_missing_column_names_the_file_and_download_prints_the_hub_steps(tmp_path):
    import pyarrow.parquet as pq

    get_task("inquire-rerank").fixture(tmp_path / "d")
    for f in (tmp_path / "d" / "data").glob("*.parquet"):
        pq.write_table(pq.read_table(f).drop(["relevant"]), f)
    with pytest.raises(DataError, match="relevant"):
        get_task("inquire-rerank").read(get_task("inquire-rerank").options(data=tmp_path / "d"))
    with pytest.raises(DataError, match="evendrow/INQUIRE-Rerank"):
        get_task("inquire-rerank").fetch(tmp_path / "empty")


def test_one_config_with_a_probe_task_a_zero_shot_task_and_inquire_stores_all_three(tmp_path, capsys):
    for name in ("plankton", "nabirds", "inquire-rerank"):
        get_task(name).fixture(tmp_path / name)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 100\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n'
        '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n\n'
        '[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n[data]\n'
        + "".join(f'{n} = "{tmp_path / n}"\n' for n in ("plankton", "nabirds", "inquire-rerank"))
    )
    assert cli.main(["run", str(cfg)]) == 0
    rows = report.load(tmp_path / "results" / "results.sqlite")
    got = {(r["task"], r["method"]) for r in rows}
    assert {("plankton", "cvml"), ("nabirds", "zero-shot"), ("inquire-rerank", "zero-shot")} <= got
    capsys.readouterr()
    assert cli.main(["report", "--db", str(tmp_path / "results" / "results.sqlite")]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("plankton", "nabirds", "inquire-rerank")), out


def test_the_validation_split_reads_inquires_val_query_list(tmp_path):
    get_task("inquire-rerank").fixture(tmp_path / "d")
    for f in (tmp_path / "d" / "data").glob("test-*.parquet"):
        f.rename(f.with_name(f.name.replace("test-", "validation-")))
    (tmp_path / "d" / "inquire_queries_val.csv").write_text(
        ",query_id,query_text,supercategory,category,iconic_group\n0,3,a lost query,Behavior,Miscellaneous Behavior,Birds\n"
    )
    spec = get_task("inquire-rerank")
    ex = spec.read(spec.options(data=tmp_path / "d", split="validation"))
    assert ex.names("") == ("a lost query",) and ex.table["subtask"].n_unique() == 6


# The MLLM route: relevance questions against the local OpenAI-compatible server (tests/mllm_server.py)


def colour_judge(prompt: str, rgb):
    """Answers "Yes" when the image's mean colour is nearest the colour the query names, with log-probabilities
    graded by how near it is."""
    from biobench import fixtures

    palette = {c: np.asarray(v) * 255 for c, *_, v in fixtures.COLOURED_TAXA}
    named = next(c for c in palette if f" {c} " in prompt.lower())
    d = {c: float(np.linalg.norm(rgb - v)) for c, v in palette.items()}
    margin = min(v for c, v in d.items() if c != named) - d[named]  # > 0: nearest the named colour
    p = float(np.clip(1 / (1 + np.exp(-margin / 20)), 1e-6, 1 - 1e-6))
    return ("Yes" if p > 0.5 else "No"), [("Yes", float(np.log(p))), ("No", float(np.log(1 - p))), ("Maybe", -9.0)]


def rerank_client(server, cache=None):
    from biobench.config import Model
    from biobench.mllm import registry
    from biobench.mllm.client import Client

    model = Model("local", "test-vlm", method="mllm", base_url=server.url, context_tokens=100_000, usd_per_m_input=1.0,
                  usd_per_m_output=2.0, max_rps=500.0, parallel=8, backoff_s=0.01, max_backoff_s=0.05, timeout_s=5.0)  # fmt: skip
    return Client(model, registry.resolve(model), cache=cache)


def shuffled_candidates(tmp_path):
    """The fixture's examples with each query's candidates in a random order (the fixture lists relevant ones first)."""
    import dataclasses

    spec = get_task("inquire-rerank")
    spec.fixture(tmp_path / "d")
    ex = spec.read(spec.options(data=tmp_path / "d"))
    return spec, dataclasses.replace(ex, table=ex.table.sample(fraction=1.0, shuffle=True, seed=3))


@pytest.mark.parametrize("logprobs", [True, False])
def test_mllm_rerank_scores_by_yes_probability_or_by_the_answer(tmp_path, mllm_server, logprobs):
    from biobench.evaluation import EvalContext
    from biobench.store import Store
    from biobench.tasks.inquire import evaluate_mllm

    mllm_server.state.judge = colour_judge
    mllm_server.state.logprobs_enabled = logprobs
    spec, ex = shuffled_candidates(tmp_path)
    with Store(tmp_path / "answers.sqlite") as store, rerank_client(mllm_server, cache=store) as client:
        out = evaluate_mllm(spec.options(data=tmp_path / "d"), ex, client, EvalContext(n_bootstrap=100))
        assert len(mllm_server.state.records) == mllm_server.state.logprob_requests == 72
        assert out.sub_scores["scored_by"] == {
            "logprobs": 72 if logprobs else 0,
            "answer": 0 if logprobs else 72,
            "unparsed": 0,
            "failed": 0,
        }
        assert out.score > 0.9 and out.n_test == 6 and out.cost_usd > 0 and out.n_failed == 0
        assert all(r.text.startswith('Does this picture show exactly "a ') and r.n_images == 1 for r in mllm_server.state.records)
        yes = [s for i in out.example_info for s in i["yes_scores"]]
        assert (len(set(yes)) > 2) == logprobs  # graded probabilities, or 0/1 answers
        again = evaluate_mllm(spec.options(data=tmp_path / "d"), ex, client, EvalContext(n_bootstrap=100))
    assert len(mllm_server.state.records) == 72 and again.score == out.score  # every answer came from the cache


def test_yes_scores_and_ties_broken_by_candidate_order():
    from biobench.mllm.client import Answer
    from biobench.tasks.inquire import break_ties, yes_score

    assert yes_score(Answer("No", top_logprobs=((" yes", np.log(0.3)), ("YES", np.log(0.1)), ("No", np.log(0.4))))) == (0.5, "logprobs")
    assert yes_score(Answer("Yes", top_logprobs=(("Yes", -0.1), ("Sure", -3.0)))) == (1.0, "logprobs")
    assert yes_score(Answer("Yes.", top_logprobs=(("Maybe", -0.1),))) == (1.0, "answer")  # neither word: the answer decides
    assert yes_score(Answer("**No**, it is not.")) == (0.0, "answer")
    assert yes_score(Answer("It might be.")) == (0.0, "unparsed") and yes_score(Answer(None, error="x")) == (0.0, "failed")
    s = np.array([1.0, 0.0, 1.0, 0.5, 0.0])
    assert break_ties(s).tolist() == [5.0, 2.0, 4.0, 3.0, 1.0]  # equal scores: the earlier candidate ranks first
    y = np.array([0, 1, 1, 0, 0])
    assert ranking.ap(y, break_ties(s)) == pytest.approx(average_precision_score(y, [5, 2, 4, 3, 1]), abs=1e-12)


def test_clip_rows_and_mllm_rows_share_one_inquire_column(tmp_path, mllm_server, capsys):
    mllm_server.state.judge = colour_judge
    get_task("inquire-rerank").fixture(tmp_path / "d")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 100\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n'
        '[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n'
        f'[[models]]\norg = "local"\nckpt = "test-vlm"\nmethod = "mllm"\nbase_url = "{mllm_server.url}"\ncontext_tokens = 100000\n'
        "max_rps = 500.0\nparallel = 8\nusd_per_m_input = 1.0\nusd_per_m_output = 2.0\n\n"
        f'[data]\ninquire-rerank = "{tmp_path / "d"}"\n'
    )
    assert cli.main(["run", str(cfg)]) == 0
    rows = report.load(tmp_path / "results" / "results.sqlite")
    assert {(r["model"], r["method"]) for r in rows} == {("builtin:colour-clip", "zero-shot"), ("local:test-vlm", "mllm")}
    assert all(r["score"] > 0.9 for r in rows)
    capsys.readouterr()
    assert cli.main(["report", "--db", str(tmp_path / "results" / "results.sqlite"), "--format", "json"]) == 0
    cells = [c for c in json.loads(capsys.readouterr().out) if c["task"] == "inquire-rerank"]
    assert {c["model"] for c in cells} == {"builtin:colour-clip", "local:test-vlm"}
    assert len(mllm_server.state.records) == 72  # one question per candidate
