"""Ages: 12 species across stages of life, by probe on features and by prompting an MLLM."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from biobench import config, report, runner
from biobench.config import Model
from biobench.evaluation import EvalContext
from biobench.mllm import registry
from biobench.mllm.client import Client
from biobench.routes import mllm as mllm_route
from biobench.routes import probe as route
from biobench.store import Store
from biobench.tasks import ages, newt
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ages_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ages")
    out = run_cli("fixture", "ages", "--dir", str(d))
    assert out.returncode == 0, out.stderr
    return d


def test_fixture_is_newt_format_with_twelve_age_tasks(ages_dir):
    df = pl.read_csv(ages_dir / newt.LABELS_CSV)
    assert set(df.columns) >= set(newt.REQUIRED_COLUMNS) | {"text_label"}
    assert sorted(df["task"].unique()) == sorted(ages.SPECIES)
    assert set(df["text_label"]) == {"adult", "not_adult"}
    assert all((ages_dir / newt.IMAGES_DIR / f"{i}.jpg").is_file() for i in df["id"])
    labels = ages.read_labels(ages.Options(data=ages_dir))
    assert labels["species"].min() == 0 and labels["species"].max() == 11


def planted_features(df: pl.DataFrame, juveniles_informative: bool, seed: int = 0) -> np.ndarray:
    """Features that encode species for adults, and for juveniles only if asked."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, size=(df.height, 16))
    species = df["species"].to_numpy()
    adult = (df["text_label"] == "adult").to_numpy()
    keep = adult | juveniles_informative
    x[np.flatnonzero(keep), species[keep]] += 3.0
    return x


@pytest.fixture
def small_search(monkeypatch):
    """Fewer random-search draws: these tests check which images each setting uses, not the search."""
    from biobench.probes import svm

    monkeypatch.setattr(svm, "N_DRAWS", 4)


def test_settings_use_the_right_train_and_test_stages(ages_dir, small_search):
    cfg = ages.Options(data=ages_dir)
    examples, per_image = ages.read(cfg), ages.read_labels(cfg)
    ctx = EvalContext(n_train=-1, seed=0, n_bootstrap=100)
    both = route.evaluate(ages.SPEC, cfg, examples, planted_features(per_image, True), ctx)
    adult_only = route.evaluate(ages.SPEC, cfg, examples, planted_features(per_image, False), ctx)
    acc = lambda r, s: r.sub_scores["setting"][s]["accuracy"]  # noqa: E731
    assert all(acc(both, s) > 0.9 for s in ("adult/adult", "not_adult/not_adult", "adult/not_adult"))
    assert acc(adult_only, "adult/adult") > 0.9
    # Juvenile features carry no species: anything tested on juveniles is near chance (1/12).
    assert acc(adult_only, "adult/not_adult") < 0.3 and acc(adult_only, "not_adult/not_adult") < 0.3
    assert adult_only.score == acc(adult_only, "adult/not_adult")  # the headline
    # All three settings' predictions are kept (the seed kept only the last one's).
    n_test = {s: v["n_test"] for s, v in both.sub_scores["setting"].items()}
    assert n_test == {"adult/adult": 48, "not_adult/not_adult": 48, "adult/not_adult": 48}
    assert both.n_test == 144 and len(set(both.example_ids)) == 144
    assert {i.split(":")[0] for i in both.example_ids} == set(n_test)


def test_n_train_is_balanced_over_species(ages_dir):
    cfg = ages.Options(data=ages_dir)
    features = planted_features(ages.read_labels(cfg), True)
    result = route.evaluate(ages.SPEC, cfg, ages.read(cfg), features, EvalContext(n_train=24, seed=1, n_bootstrap=50))
    assert result.n_train_actual == 24 and result.score > 0.8


def test_two_workers_split_the_searches_by_fold_with_the_same_results(ages_dir):
    """n_jobs = 2 spreads the 3 settings' searches by (setting, fold) (`Svm.fit_many`): same predictions and choices."""
    cfg = ages.Options(data=ages_dir)
    features = planted_features(ages.read_labels(cfg), True)
    one, two = (
        route.evaluate(ages.SPEC, cfg, ages.read(cfg), features, EvalContext(n_train=24, seed=1, n_bootstrap=50, n_jobs=n)) for n in (1, 2)
    )
    assert ages.SPEC.probe_for(cfg).splits_fits(3, 2) and not ages.SPEC.probe_for(cfg).splits_fits(3, 1)
    assert list(one.example_ids) == list(two.example_ids)
    assert list(one.example_info) == list(two.example_info)  # true label, prediction, setting per test image
    assert np.array_equal(one.example_scores, two.example_scores)
    assert one.sub_scores == two.sub_scores and one.score == two.score


def test_pixel_stats_and_mllm_rows_side_by_side(ages_dir, mllm_server, config_file, tmp_path):
    path = config_file(f"""
        device = "cpu"
        n_workers = 0
        n_jobs = 1
        n_bootstrap = 100
        n_train = 24
        [[models]]
        org = "builtin"
        ckpt = "pixel-stats"
        [[models]]
        org = "local"
        ckpt = "test-vlm"
        method = "mllm"
        base_url = "{mllm_server.url}"
        context_tokens = 100000
        max_rps = 500.0
        parallel = 8
        [data]
        ages = "{ages_dir}"
        """)
    summary = runner.run(config.load(path))
    assert summary.run == 2 and summary.failed == 0
    rows = {r["method"]: r for r in report.load(tmp_path / "results" / "results.sqlite")}
    assert rows["cvml"]["score"] > 0.25 and rows["mllm"]["score"] > 0.25  # chance is 1/12
    assert rows["mllm"]["n_test"] == rows["cvml"]["n_test"] == 144
    assert rows["mllm"]["n_train_actual"] == 24 and rows["mllm"]["parse_rate"] == 1.0
    assert rows["mllm"]["cost_usd"] is None  # no prices given: cost unknown, not zero
    assert set(json.loads(rows["mllm"]["sub_scores"])["setting"]) == {"adult/adult", "not_adult/not_adult", "adult/not_adult"}
    assert {r.n_images for r in mllm_server.state.records} == {25}
    with Store(tmp_path / "results" / "results.sqlite") as store:
        infos = [i for _, _, i in store.predictions(rows["mllm"]["id"])]
    assert {i["setting"] for i in infos} == {"adult/adult", "not_adult/not_adult", "adult/not_adult"}
    assert set(i["gold_name"] for i in infos) == set(ages.SPECIES.values())


def test_shuffled_species_are_near_chance(tmp_path, mllm_server):
    ages.make_fixture(tmp_path, seed=0, shuffle_labels=True)
    cfg = ages.Options(data=tmp_path)
    model = Model("local", "test-vlm", method="mllm", base_url=mllm_server.url, context_tokens=100_000, max_rps=500.0, parallel=8)
    with Client(model, registry.resolve(model)) as client:
        result = mllm_route.evaluate(ages.SPEC, ages.read(cfg), client, EvalContext(n_train=24, seed=0, n_bootstrap=50))
    assert result.score < 0.3
