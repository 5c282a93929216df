"""Birds525: the Kaggle layout, its bad inputs, k-shot draws against scikit-learn, the crossed interval, Kaggle steps."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import NearestCentroid

from biobench import stats
from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.routes.probe import evaluate
from biobench.sampling import Repeats, repeat_rows
from biobench.tasks import birds525


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("birds525")
    birds525.make_fixture(d, seed=0)
    return d


def _run(root: Path, features: np.ndarray, seed: int = 0, n_bootstrap: int = 200, **options):
    opts = birds525.Options(data=root, **options)
    examples = birds525.read(opts)
    return examples, evaluate(birds525.SPEC, opts, examples, features, EvalContext(seed=seed, n_bootstrap=n_bootstrap))


def _layout(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """Empty image files in the class-folder layout (features are given directly)."""
    for split, per in counts.items():
        for species, n in per.items():
            (root / split / species).mkdir(parents=True)
            for k in range(n):
                (root / split / species / f"{k + 1:03d}.jpg").write_bytes(b"")
    return root


def test_fixture_is_the_kaggle_layout(data):
    lines = (data / "birds.csv").read_text().splitlines()
    assert lines[0] == "class id,filepaths,labels,data set,scientific name"
    listed = {line.split(",")[1] for line in lines[1:]}
    assert listed == {p.relative_to(data).as_posix() for p in data.glob("*/*/*.jpg")}
    for test_split in ("valid", "test"):
        t = birds525.read(birds525.Options(data=data, test_split=test_split)).table
        assert {i.split("/")[0] for i in t.filter(t["split"] == "train")["id"]} == {"train"}
        assert {i.split("/")[0] for i in t.filter(t["split"] == "test")["id"]} == {test_split}
    assert birds525.read(birds525.Options(data=data)).names("") == birds525.FIXTURE_SPECIES


def test_missing_split_folder_is_named(data, tmp_path):
    shutil.copytree(data / "train", tmp_path / "train")
    with pytest.raises(DataError, match=rf"{tmp_path / 'valid'} not found.*biobench download birds525"):
        birds525.read(birds525.Options(data=tmp_path))


def test_empty_species_folder_is_named(tmp_path):
    root = _layout(tmp_path, {"train": {"BALD EAGLE": 2}, "valid": {"BALD EAGLE": 1}})
    (root / "train" / "OSTRICH").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/OSTRICH holds no images"):
        birds525.read(birds525.Options(data=root))


def test_species_without_training_images_is_kept_never_predicted_and_logged(tmp_path, caplog):
    root = _layout(tmp_path, {"train": {"A": 2, "C": 2}, "valid": {"A": 2, "B": 3, "C": 2}})
    with caplog.at_level(logging.WARNING, logger="biobench.tasks.birds525"):
        examples, report = _run(root, np.random.default_rng(0).normal(size=(11, 4)), n_repeats=3)
    assert "1 species have test images but no training folder (e.g. B)" in caplog.text
    assert examples.names("") == ("A", "B", "C")
    info = report.example_info
    assert all(i["pred"] != 1 for i in info) and sum(i["label"] == 1 for i in info) == 3 * 3


def test_each_draw_is_k_shot_and_matches_sklearns_nearest_centroid(data):
    examples = birds525.read(birds525.Options(data=data))
    y, split = examples.labels(), examples.table["split"].to_numpy()
    x = np.random.default_rng(1).normal(size=(len(y), 6)) + 1.5 * np.eye(6)[y]
    _, report = _run(data, x, seed=7, n_repeats=5, shots=2)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    draws = repeat_rows(y, train, Repeats(5, 2), seed=7, name="birds525")
    repeat = np.array([i["repeat"] for i in report.example_info])
    pred = np.array([i["pred"] for i in report.example_info])
    assert report.n_test == 5 * len(test) and len(set(report.example_ids)) == report.n_test
    for r, rows in enumerate(draws):
        assert np.bincount(y[rows]).tolist() == [2] * 6
        mean = x[rows].mean(0)
        unit = lambda a: (a - mean) / np.linalg.norm(a - mean, axis=1, keepdims=True)  # noqa: E731
        want = NearestCentroid().fit(unit(x[rows]), y[rows]).predict(unit(x[test]))
        assert np.array_equal(pred[repeat == r], want)
        assert report.sub_scores["repeat"][str(r)]["n_train"] == 12
        assert report.sub_scores["repeat"][str(r)]["accuracy"] == pytest.approx((want == y[test]).mean())
    assert report.score == pytest.approx(np.mean([report.sub_scores["repeat"][str(r)]["accuracy"] for r in range(5)]))


def test_interval_resamples_draws_and_test_images_crossed(data):
    examples = birds525.read(birds525.Options(data=data))
    x = np.random.default_rng(2).normal(size=(len(examples.images), 6)) + np.eye(6)[examples.labels()]
    _, report = _run(data, x, n_repeats=20, n_bootstrap=300)
    repeat = [i["repeat"] for i in report.example_info]
    image = [i.split(":", 1)[1] for i in report.example_ids]
    want = stats.crossed_mean_ci(np.asarray(report.example_scores), np.asarray(repeat), np.asarray(image), n_resamples=300, seed=0)
    assert (report.score, report.ci_low, report.ci_high) == pytest.approx((want.estimate, want.low, want.high))


def test_interval_is_wider_than_one_draws_when_draws_disagree(tmp_path):
    # Two species, 30 test photos each on opposite sides; each species has one typical and one
    # atypical (looks like the other species) training photo, so a draw scores 1, 0.5 or 0.
    root = _layout(tmp_path, {"train": {"A": 2, "B": 2}, "valid": {"A": 30, "B": 30}})
    examples = birds525.read(birds525.Options(data=root))
    ids = examples.images.ids
    side = np.array([1.0 if i.startswith(("train/A/001", "train/B/002", "valid/A")) else -1.0 for i in ids])
    x = np.stack([side, 0.01 * np.random.default_rng(3).normal(size=len(ids)), np.ones(len(ids))], axis=1)
    _, many = _run(root, x, n_repeats=12, n_bootstrap=500)
    accuracies = {v["accuracy"] for v in many.sub_scores["repeat"].values()}
    assert len(accuracies) > 1  # the draws disagree
    scores, repeat = np.asarray(many.example_scores), np.array([i["repeat"] for i in many.example_info])
    singles = [stats.mean_ci(scores[repeat == r], n_resamples=500, seed=0) for r in range(12)]
    _, one = _run(root, x, n_repeats=1, n_bootstrap=500)
    assert many.ci_high - many.ci_low > max(max(c.high - c.low for c in singles), one.ci_high - one.ci_low) + 0.05


def test_download_prints_the_kaggle_steps_and_the_layout_or_accepts_files_in_place(data, tmp_path):
    with pytest.raises(DataError) as info:
        birds525.SPEC.fetch(tmp_path / "new")
    message = str(info.value)
    for part in ("kaggle.json", "pip install kaggle", f"kaggle datasets download -d gpiosenka/100-bird-species -p {tmp_path / 'new'}",
                 f"cd {tmp_path / 'new'} && unzip 100-bird-species.zip", f"{tmp_path / 'new'}/valid/<SPECIES>/*.jpg"):  # fmt: skip
        assert part in message
    birds525.SPEC.fetch(data)  # already laid out: nothing to do


def test_spec_declares_1_shot_100_repeats_and_no_n_train():
    spec = birds525.SPEC
    assert spec.repeats(birds525.Options(data=Path("."))) == Repeats(100, 1) and spec.uses_n_train is False
    assert spec.repeats(birds525.Options(data=Path("."), n_repeats=5, shots=3)) == Repeats(5, 3)
