"""The task-layer port changed no stored number: NeWT, Ages and hybrids against `regression/pre_port.json`.

`pre_port.json` holds every experiment's score, interval, n_train_actual, sub-scores and
predictions from the code before the task layer (commit 1db6cc6, via
`tests/regression/capture.py`): pixel-stats on all three tasks and the test MLLM on NeWT
and Ages, n_train in {all, 8}, seeds {0, 1}. The one deliberate change is Ages' probe
protocol (version 2 fits on L2-normalised features without NeWT's per-setting centring),
so for Ages' probe rows we check both that the port with the old preprocessing reproduces
the old numbers and that the new protocol is what an independent computation gives. Since
issue 10 hybrids stores log-odds instead of probabilities: its rows are compared through
the logit (`_as_log_odds`), every metric exactly. Since issue 13 NeWT's interval resamples
its sub-tasks (clusters) instead of its images: NeWT rows check every other number against
the record and the interval against a hand-written task-clustered bootstrap.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from biobench.evaluation import EvalContext
from biobench.routes import probe as route
from biobench.tasks import ages
from tests.regression.capture import capture

PRE_PORT = json.loads((Path(__file__).parent / "regression" / "pre_port.json").read_text())


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    from tests.mllm_server import shared_server

    server = shared_server()
    server.state.reset()
    return capture(tmp_path_factory.mktemp("capture"), server.url)


def test_every_experiment_is_still_there(now):
    assert set(now) == set(PRE_PORT) and len(now) == 20


@pytest.mark.parametrize("key", sorted(k for k in PRE_PORT if not k.startswith("ages|cvml")))
def test_scores_intervals_sub_scores_and_predictions_are_identical(now, key):
    expected = PRE_PORT[key]
    if key.startswith("hybrids|cvml"):
        expected = _as_log_odds(expected)
        got = json.loads(json.dumps(now[key]))
        for (i, s, info), (j, t, info2) in zip(got["predictions"], expected["predictions"], strict=True):
            assert (i, info) == (j, info2) and s == pytest.approx(t, rel=1e-6, abs=1e-9)
        for group in ("A_scores", "mimic_scores"):
            threshold = got["sub_scores"]["detailed"][group].pop("threshold_pred")
            assert threshold == pytest.approx(expected["sub_scores"]["detailed"][group].pop("threshold_pred"), rel=1e-6, abs=1e-9)
        got.pop("predictions"), expected.pop("predictions")
        assert got == expected
        return
    if key.startswith("newt|"):
        # Issue 13: NeWT's interval resamples whole sub-tasks (its tasks are clusters); every other number is unchanged.
        got = dict(now[key])
        assert (got.pop("ci_low"), got.pop("ci_high")) == _task_clustered_interval(got, seed=int(key.rsplit("|", 1)[1]))
        expected = {k: v for k, v in expected.items() if k not in ("ci_low", "ci_high")}
        assert got == expected
        return
    assert now[key] == expected


def _task_clustered_interval(stored: dict, *, seed: int, n_resamples: int = 300) -> tuple[float, float]:
    """By hand: draw as many NeWT tasks as there are, with replacement (Multinomial(G, 1/G) on the seed, tasks in
    sorted order), pool the drawn tasks' stored per-example scores with their multiplicity, take the mean."""
    by_task: dict[str, list[float]] = {}
    for _, score, info in stored["predictions"]:
        by_task.setdefault(info["task"], []).append(score)
    tasks = sorted(by_task)
    assert len(tasks) == 7
    draws = np.random.default_rng(seed).multinomial(len(tasks), [1 / len(tasks)] * len(tasks), size=n_resamples)
    reps = []
    for counts in draws:
        pooled = [s for t, c in zip(tasks, counts) for _ in range(c) for s in by_task[t]]
        reps.append(sum(pooled) / len(pooled))
    estimate = float(np.mean([s for _, s, _ in stored["predictions"]]))
    low, high = np.quantile(reps, [0.025, 0.975])
    return pytest.approx(min(low, estimate), abs=1e-12), pytest.approx(max(high, estimate), abs=1e-12)


def _as_log_odds(stored: dict) -> dict:
    """Issue 10: hybrids scores became the log-odds of hybrid (probabilities saturate at 1.0, which could
    zero the challenge score). Same order, so every metric is unchanged; the stored scores and the
    thresholds, which are scores, are the old probabilities' logits."""
    out = json.loads(json.dumps(stored))
    logit = lambda p: float(np.log(p) - np.log1p(-p))
    out["predictions"] = [[i, logit(p), info] for i, p, info in out["predictions"]]
    for group in ("A_scores", "mimic_scores"):
        detailed = out["sub_scores"]["detailed"][group]
        detailed["threshold_pred"] = logit(detailed["threshold_pred"])
    return out


def _features(spec, data: Path, cache: Path):
    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features

    examples = spec.read(spec.options(data=data))
    return examples, get_features(
        load_vision_backbone("builtin", "pixel-stats"), examples.images, FeatureCache(cache), EmbedSettings("cpu", 64, 0, "stat")
    ).features


@pytest.fixture(scope="module")
def ages_features(tmp_path_factory):
    d = tmp_path_factory.mktemp("ages")
    ages.make_fixture(d / "data", seed=0)
    examples, x = _features(ages.SPEC, d / "data", d / "cache")
    return ages.Options(data=d / "data"), examples, x


def _as_stored(result) -> dict:
    preds = sorted([i, float(s), info] for i, s, info in zip(result.example_ids, result.example_scores, result.example_info))
    return json.loads(json.dumps({"score": result.score, "ci_low": result.ci_low, "ci_high": result.ci_high,
                                  "n_train_actual": result.n_train_actual, "predictions": preds, "sub_scores": result.sub_scores}))  # fmt: skip


@pytest.mark.parametrize("n_train, seed", [(-1, 0), (-1, 1), (8, 0), (8, 1)])
def test_ages_with_the_old_centring_reproduces_the_old_numbers(ages_features, n_train, seed):
    options, examples, x = ages_features
    centred = dataclasses.replace(ages.SPEC, preprocess=("l2", "centre", "l2"))
    got = _as_stored(route.evaluate(centred, options, examples, x, EvalContext(n_train=n_train, seed=seed, n_bootstrap=300)))
    want = PRE_PORT[f"ages|cvml|{n_train}|{seed}"]
    for setting in got["sub_scores"]["setting"].values():
        assert setting.pop("n_train") <= 72  # new in version 2's sub-scores
    for field in ("score", "ci_low", "ci_high", "n_train_actual", "predictions", "sub_scores"):
        assert got[field] == want[field], field


def test_ages_v2_fits_on_l2_features_without_centring(ages_features):
    """Independent check of the new protocol: the NeWT search on L2-normalised features, per setting."""
    from biobench.probes import svm

    options, examples, x = ages_features
    result = route.evaluate(ages.SPEC, options, examples, x, EvalContext(n_train=-1, seed=0, n_bootstrap=300))
    assert ages.SPEC.version == 2 and ages.SPEC.preprocess == ("l2",)
    t = examples.table
    xl2 = x / np.linalg.norm(x, axis=1, keepdims=True)
    rows = (t["subtask"] == ages.HEADLINE).to_numpy()
    train = rows & (t["split"] == "train").to_numpy()
    test = rows & (t["split"] == "test").to_numpy()
    img, y = t["image"].to_numpy(), t["label"].to_numpy()
    pred, _ = svm.fit_predict(xl2[img[train]].astype(np.float64), y[train], xl2[img[test]].astype(np.float64), seed=0)
    assert result.score == pytest.approx(np.mean(pred == y[test]))
    # On this fixture the change moves the headline from 0.417 (centred, version 1) to 0.458.
    assert PRE_PORT["ages|cvml|-1|0"]["score"] == pytest.approx(0.4167, abs=1e-4)
    assert result.score == pytest.approx(0.4583, abs=1e-4)
