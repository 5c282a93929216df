"""INQUIRE-Rerank: metrics against scikit-learn, skipped queries, download steps, and a mixed config end to end."""

from __future__ import annotations

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
