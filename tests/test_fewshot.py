"""BioCLIP 2's few-shot SimpleShot on the zero-shot sets: folds, the classifier against a hand-written reference, runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biobench import cli, fewshot, report
from biobench.evaluation import EvalContext
from biobench.tasks import get_task


def reference(x_support, y_support, x_test):
    """BioCLIP 2's steps written out: L2, centre on the support mean, L2, class means, nearest by Euclidean distance."""
    l2 = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    xs, xt = l2(x_support), l2(x_test)
    mean = xs.mean(axis=0)
    xs, xt = l2(xs - mean), l2(xt - mean)
    classes = sorted(set(y_support.tolist()))
    centroids = {c: xs[y_support == c].mean(axis=0) for c in classes}
    return np.array([min(classes, key=lambda c: np.linalg.norm(q - centroids[c])) for q in xt])


@pytest.fixture()
def nabirds(tmp_path):
    get_task("nabirds").fixture(tmp_path / "nab")
    spec = get_task("nabirds")
    return spec, spec.read(spec.options(data=tmp_path / "nab"))


@pytest.mark.parametrize("shots", [1, 5])
def test_predictions_and_score_equal_a_hand_written_nearest_centroid(nabirds, shots):
    spec, examples = nabirds
    rng = np.random.default_rng(3)
    labels = examples.labels()
    features = rng.normal(size=(len(labels), 6)) + labels[:, None] * 0.3  # one image per example, in order
    rep = fewshot.evaluate("nabirds", examples, features, EvalContext(n_train=shots, seed=7, n_bootstrap=200), n_folds=5)
    ids = examples.table["id"].to_list()
    rows = np.arange(len(labels))
    fold_acc = []
    for r, support in enumerate(fewshot.folds(labels, rows, shots, 5, 7, "nabirds")):
        counts = np.bincount(labels[support], minlength=5)
        assert (counts == shots).all()  # 6 images a class: exactly k each
        test = np.setdiff1d(rows, support)
        want = reference(features[support], labels[support], features[test])
        got = {i: info["pred"] for i, info in zip(rep.example_ids, rep.example_info) if i.startswith(f"r{r}:")}
        assert [got[f"r{r}:{ids[t]}"] for t in test] == want.tolist()
        fold_acc.append(np.mean(want == labels[test]))
        assert rep.sub_scores["repeat"][str(r)]["accuracy"] == pytest.approx(fold_acc[-1])
    assert rep.score == pytest.approx(np.mean(fold_acc), abs=1e-12)  # BioCLIP 2's number: the mean over folds
    assert rep.ci_low <= rep.score <= rep.ci_high and rep.n_test == 5 * (30 - 5 * shots)
    assert rep.sub_scores["protocol"] == {"shots": shots, "folds": 5, "probe": "simpleshot"}


def test_folds_are_seeded_distinct_and_disjoint_from_their_test_images():
    labels = np.repeat(np.arange(4), [2, 5, 9, 1])
    rows = np.arange(len(labels))
    a = fewshot.folds(labels, rows, 1, 5, 0, "t")
    assert all(np.array_equal(x, y) for x, y in zip(a, fewshot.folds(labels, rows, 1, 5, 0, "t")))
    assert not all(np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, fewshot.folds(labels, rows, 1, 5, 1, "t")))
    assert len({tuple(np.sort(f)) for f in a}) > 1
    five = fewshot.folds(labels, rows, 5, 3, 0, "t")
    assert all(sorted(np.bincount(labels[f]).tolist()) == [1, 2, 5, 5] for f in five)  # small classes give all they have
    assert all(np.array_equal(x, y) for x, y in zip(a, fewshot.folds(labels, rows, 1, 7, 0, "t")))  # more folds: the same first five


def test_config_runs_one_and_five_shots_beside_zero_shot_and_a_second_run_embeds_nothing(tmp_path, monkeypatch):
    for name in ("nabirds", "idle-oo-camera-traps"):
        get_task(name).fixture(tmp_path / name)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 100\nn_train = [1, 5]\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n'
        '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n\n'
        '[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n'
        f'[data]\nnabirds = "{tmp_path / "nabirds"}"\nidle-oo-camera-traps = "{tmp_path / "idle-oo-camera-traps"}"\n'
    )
    assert cli.main(["run", str(cfg)]) == 0
    rows = report.load(tmp_path / "results" / "results.sqlite")
    got = {(r["task"], r["method"], r["n_train"]): r["score"] for r in rows}
    for task in ("nabirds", "idle-oo-camera-traps"):
        assert got[(task, "cvml", 1)] > 0.6 and got[(task, "cvml", 5)] > 0.6  # coloured classes; chance 0.2
        assert (task, "zero-shot", -1) in got
    (tmp_path / "results" / "results.sqlite").unlink()  # the results go; the caches stay
    from biobench.backbones.builtin import ColourClip, PixelStats

    def no_forward(*_):
        raise AssertionError("a forward pass on a second run")

    for cls in (PixelStats, ColourClip):
        monkeypatch.setattr(cls, "img_encode", no_forward)
    monkeypatch.setattr(ColourClip, "txt_encode", no_forward)
    assert cli.main(["run", str(cfg)]) == 0
    again = report.load(tmp_path / "results" / "results.sqlite")
    assert len(again) == len(rows) and all(json.loads(r["config"])["embedding"]["n_embedded"] == 0 for r in again)


def test_shuffled_labels_give_chance(tmp_path):
    get_task("nabirds").fixture(tmp_path / "nab", shuffle_labels=True)
    spec = get_task("nabirds")
    examples = spec.read(spec.options(data=tmp_path / "nab"))
    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features

    feats = get_features(
        load_vision_backbone("builtin", "pixel-stats"), examples.images, FeatureCache(tmp_path / "c"), EmbedSettings(n_workers=0)
    ).features
    rep = fewshot.evaluate("nabirds", examples, feats, EvalContext(n_train=1, n_bootstrap=100), n_folds=5)
    assert rep.score < 0.5
