"""HDR challenge: hybrids task and fixture, ingestion, baseline submission, round trip, CLI and bundle."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biobench import cli, stats
from biobench.challenge import bundle, data, ingestion, scoring
from biobench.challenge.ingestion import SubmissionError
from biobench.errors import DataError
from biobench.tasks import hybrids

DATA = Path(__file__).parent / "data" / "hdr"


@pytest.fixture(scope="session")
def hybrids_dir(tmp_path_factory) -> Path:
    """A hybrids fixture, written once per session; treat as read-only."""
    d = tmp_path_factory.mktemp("hybrids")
    hybrids.make_fixture(d, seed=0)
    return d


@pytest.fixture(scope="session")
def submission(hybrids_dir, tmp_path_factory):
    """A pixel-stats + SVC baseline submission folder trained on the fixture."""
    from biobench.challenge import baseline

    out = tmp_path_factory.mktemp("submission")
    cache = tmp_path_factory.mktemp("baseline-cache")
    res = baseline.train_baseline(
        "builtin:pixel-stats", hybrids_dir / hybrids.TRAIN_CSV, hybrids_dir / "train", out, n_workers=0, cache_dir=cache
    )
    return out, res


def _header(path: Path) -> list[str]:
    with open(path, newline="") as fd:
        return next(csv.reader(fd))


###########
# Fixture #
###########


def test_fixture_has_the_real_formats(hybrids_dir):
    assert _header(hybrids_dir / hybrids.TRAIN_CSV) == _header(DATA / "butterfly_anomaly_train.csv")
    for split in ("val", "test"):
        assert _header(hybrids_dir / f"ref_{split}.csv") == _header(DATA / f"ref_{split}.csv")
        ref = scoring.read_reference(hybrids_dir / f"ref_{split}.csv")  # every group has hybrids and non-hybrids
        assert all((hybrids_dir / split / f).is_file() for f in ref.filenames)
    train = data.read_training_csv(hybrids_dir / hybrids.TRAIN_CSV)
    assert set(train["hybrid_stat"]) == {"hybrid", "non-hybrid"}
    names = [p.name for p in (hybrids_dir / "test").iterdir()]
    assert any(" " in n for n in names)
    assert {Path(n).suffix for n in names} >= {".JPG", ".png", ".jpeg"}
    for n in names:
        with Image.open(hybrids_dir / "test" / n) as img:
            assert img.format == ("PNG" if n.endswith(".png") else "JPEG")
    # The md5 column is the real md5 of each written file, as in the real CSV.
    import hashlib

    row = train.row(0, named=True)
    assert hashlib.md5((hybrids_dir / "train" / row["filename"]).read_bytes()).hexdigest() == row["md5"]


def test_real_training_csv_reads():
    df = data.read_training_csv(DATA / "butterfly_anomaly_train.csv")
    assert df.height == 2082 and int(df["label"].sum()) == 91


def test_training_csv_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("filename,hybrid_stat\na.jpg,maybe\n")
    with pytest.raises(DataError, match="hybrid_stat of 'a.jpg' is 'maybe'"):
        data.read_training_csv(p)
    p.write_text("filename\na.jpg\n")
    with pytest.raises(DataError, match="lacks column.*hybrid_stat"):
        data.read_training_csv(p)
    p.write_text("filename,hybrid_stat\na.jpg,hybrid\na.jpg,non-hybrid\n")
    with pytest.raises(DataError, match="'a.jpg' appears 2 times"):
        data.read_training_csv(p)


########
# Task #
########


def test_task_scores_the_fixture_well_and_shuffled_labels_poorly(hybrids_dir, tmp_path):
    import biobench

    shuffled = tmp_path / "shuffled"
    hybrids.make_fixture(shuffled, seed=0, shuffle_labels=True)
    kw = dict(device="cpu", n_workers=0, n_bootstrap=200)
    good = biobench.evaluate("builtin:pixel-stats", "hybrids", hybrids_dir, **kw)
    bad = biobench.evaluate("builtin:pixel-stats", "hybrids", shuffled, options={"classifier": "sgd"}, **kw)
    assert good.metric == "challenge_score" and good.n_test == 98
    assert good.score > 0.6 and good.ci_low <= good.score <= good.ci_high
    assert bad.score < 0.3 and bad.sub_scores["leaderboard"]["A_PRC_AUC"]["score"] < 0.65
    board = good.sub_scores["leaderboard"]
    assert list(board) == list(scoring.LEADERBOARD_KEYS)
    assert all(v["ci_low"] <= v["score"] + 1e-12 and v["score"] <= v["ci_high"] + 1e-12 for v in board.values())
    # Per-example predictions are the log-odds of hybrid (finite, never saturated), and the stored metric is a function of them.
    info = good.example_info
    p = np.asarray(good.example_scores)
    y = np.array([i["label"] for i in info])
    g = np.array([scoring.GROUPS.index(i["group"]) for i in info])
    assert np.isfinite(p).all() and (p < 0).any() and (p > 0).any()
    assert scoring.challenge_metrics(p, y, g)["challenge_score"][0] == pytest.approx(good.score)


def test_task_small_n_train_is_class_balanced(hybrids_dir):
    import biobench

    rep = biobench.evaluate("builtin:pixel-stats", "hybrids", hybrids_dir, n_train=8, device="cpu", n_workers=0, n_bootstrap=20)
    assert rep.n_train_actual == 8 and rep.sub_scores["n_train"] == {"hybrid": 4, "non_hybrid": 4}


def test_bootstrap_equals_metric_on_each_resample():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    g = np.repeat([0, 1, 2], 20)
    p = np.round(rng.random(60) + 0.3 * y, 2)
    reps = hybrids.bootstrap(p, y, g, n_resamples=5, seed=7)
    idx = next(stats.resample_indices(60, n_resamples=5, seed=7, strata=hybrids.bootstrap_strata(y, g)))
    for r in range(5):  # stratified: every resample keeps each (group, label) count
        for stratum in range(6):
            assert (hybrids.bootstrap_strata(y, g)[idx[r]] == stratum).sum() == 10
    for r in range(5):
        direct = scoring.challenge_metrics(p[idx[r]], y[idx[r]], g[idx[r]])
        for key in scoring.LEADERBOARD_KEYS:
            np.testing.assert_allclose(reps[key][r], direct[key][0], atol=1e-12, err_msg=key)


def test_task_in_a_config_run_is_stored(config_file, hybrids_dir, tmp_path):
    from biobench import config, report, runner

    path = config_file(
        f"""
        report_to = "res"
        n_bootstrap = 50
        n_workers = 0
        [[models]]
        org = "builtin"
        ckpt = "pixel-stats"
        [data]
        hybrids = "{hybrids_dir}"
        [hybrids]
        eval_split = "val"
        classifier = "sgd"
        """
    )
    assert runner.run(config.load(path)).run == 1
    (row,) = json.loads(report.to_json(report.load(tmp_path / "res" / "results.sqlite")))
    assert row["task"] == "hybrids" and row["n_test"] == 80 and row["score"] > 0.5


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="biobench fixture hybrids"):
        hybrids.read(hybrids.Options(data=tmp_path))


#############
# Ingestion #
#############


def _submission(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "sub"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.py").write_text(textwrap.dedent(body))
    return d


RED = """
class Model:
    def load(self):
        self.loaded = True
    def predict(self, image):
        assert self.loaded and image.mode == "RGB"
        return sum(image.getpixel((0, 0))) / 765
"""


def _images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i, name in enumerate(["a b.jpg", "c.JPG", "d.jpeg", "e.png", "f.PNG"]):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(d / name, format="PNG" if name.lower().endswith("png") else "JPEG")
    Image.new("L", (8, 8), 128).save(d / "gray.jpg")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / ".DS_Store").write_bytes(b"junk")
    return d


def test_ingest_scores_every_readable_image_and_counts_the_rest(tmp_path):
    res = ingestion.ingest(_submission(tmp_path, RED), _images(tmp_path), tmp_path / "out")
    lines = (tmp_path / "out" / "predictions.txt").read_text().splitlines()
    names = [line.rpartition(",")[0] for line in lines]
    assert names == ["a b.jpg", "c.JPG", "d.jpeg", "e.png", "f.PNG", "gray.jpg"]
    assert res.n_scored == 6 and res.skipped == ("broken.jpg",) and res.ignored == ("notes.txt",)
    assert float(lines[-1].rpartition(",")[2]) == pytest.approx(128 * 3 / 765, abs=0.01)  # grey -> RGB


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            RED.replace("return sum", "raise ValueError('boom') #"),
            r"model.py crashed in predict\(\) on image 'a b.jpg'.* at model.py:\d+ .*ValueError: boom.*BIOBENCH_LOG=DEBUG",
        ),
        (
            RED.replace("self.loaded = True", "open('/no/such/weights.bin')"),
            r"model.py crashed in Model.load\(\) at model.py:\d+ \(open\('/no/such/weights.bin'\)\): FileNotFoundError",
        ),
        ("import no_such_module_xyz\n", r"model.py crashed in importing it at model.py:1 .*ModuleNotFoundError"),
        ("class NotModel: pass\n", "defines no class Model"),
        (RED.replace("return sum(image.getpixel((0, 0))) / 765", "return 'high'"), r"predict\(\) on image 'a b.jpg' returned 'high'"),
        (RED.replace("return sum(image.getpixel((0, 0))) / 765", "return float('nan')"), "returned nan; scores must be finite"),
    ],
)
def test_submission_failures_name_the_file_and_image(tmp_path, body, message):
    sub = _submission(tmp_path, body)
    with pytest.raises(SubmissionError, match=message):
        ingestion.ingest(sub, _images(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out" / "predictions.txt").exists()  # no file that looks complete


def test_missing_model_py(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    with pytest.raises(SubmissionError, match="No model.py in"):
        ingestion.ingest(tmp_path / "empty", tmp_path / "imgs", tmp_path / "out")


##############
# Round trip #
##############


def test_baseline_submission_ingest_score_round_trip(hybrids_dir, submission, tmp_path):
    sub, res = submission
    assert sorted(p.name for p in sub.iterdir()) == sorted(["model.py", "classifier.pkl", "metadata.json", "requirements.txt"])
    meta = json.loads((sub / "metadata.json").read_text())
    assert meta["backbone"] == {"org": "builtin", "ckpt": "pixel-stats", "pretrained": True} and meta["n_hybrid"] == 20

    ingestion.ingest(sub, hybrids_dir / "test", tmp_path / "res")
    board, _ = scoring.score_files(hybrids_dir / "ref_test.csv", tmp_path / "res" / "predictions.txt")

    ref = scoring.read_reference(hybrids_dir / "ref_test.csv")
    rng = np.random.default_rng(0)
    random_scores = []
    for seed in range(5):
        rand = tmp_path / f"random{seed}.txt"
        rand.write_text("".join(f"{f},{rng.random()}\n" for f in ref.filenames))
        random_scores.append(scoring.score_files(hybrids_dir / "ref_test.csv", rand)[0]["challenge_score"])
    assert board["challenge_score"] > 0.6
    assert board["challenge_score"] > max(random_scores) + 0.4
    assert board["A_PRC_AUC"] > 0.8


def test_submission_predict_matches_harness_features(hybrids_dir, submission, tmp_path):
    """model.py's one-image path gives the scores (log-odds) the classifier gave the cached training features."""
    sub, res = submission
    ingestion.ingest(sub, hybrids_dir / "train", tmp_path / "res")
    got = scoring.read_predictions(tmp_path / "res" / "predictions.txt")
    names = data.read_training_csv(hybrids_dir / hybrids.TRAIN_CSV)["filename"].to_list()
    np.testing.assert_allclose([got[n] for n in names], res.train_score, rtol=1e-4, atol=1e-4)


#######
# CLI #
#######


def test_cli_score_and_fixture(tmp_path, capsys):
    assert cli.main(["fixture", "hybrids", "--dir", str(tmp_path / "fx")]) == 0
    assert (tmp_path / "fx" / "ref_val.csv").is_file()
    d = DATA / "golden" / "all_wrong"
    out = tmp_path / "scores.json"
    rc = cli.main(["challenge", "score", "--ref", str(d / "reference.csv"), "--pred", str(d / "prediction.txt"), "--out", str(out)])
    assert rc == 0
    assert list(json.loads(out.read_text())) == list(scoring.LEADERBOARD_KEYS)
    assert json.loads((tmp_path / "scores_detailed.json").read_text())["A_scores"]["accuracy"] == 0.5
    bad = tmp_path / "bad.txt"
    bad.write_text("file1,0\n")
    assert cli.main(["challenge", "score", "--ref", str(d / "reference.csv"), "--pred", str(bad), "--out", str(out)]) == 1
    assert "no prediction for 9 of the 10 images" in capsys.readouterr().err


def test_bundle_programs_run_without_biobench(hybrids_dir, submission, tmp_path):
    import yaml

    sub, _ = submission
    out = bundle.build_bundle(
        tmp_path / "bundle",
        val_ref=hybrids_dir / "ref_val.csv",
        test_ref=hybrids_dir / "ref_test.csv",
        test_images=hybrids_dir / "test",
        baselines=(sub,),
    )
    comp = yaml.safe_load((out / "competition.yaml").read_text())
    assert comp["version"] == 2
    assert [c["key"] for c in comp["leaderboards"][0]["columns"]] == list(scoring.LEADERBOARD_KEYS)
    for task in comp["tasks"]:
        for key in ("input_data", "reference_data", "scoring_program", "ingestion_program"):
            assert (out / task[key]).is_dir(), task[key]
    for page in comp["pages"]:
        assert (out / page["file"]).is_file()
    assert (out / "baselines" / sub.name / "model.py").is_file()
    assert yaml.safe_load((out / "scoring_program" / "metadata.yaml").read_text())["command"].startswith("python3 /app/program/score.py")

    # CodaBench runs the programs in an image without biobench: make `import biobench` fail.
    blocker = tmp_path / "block" / "biobench"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('biobench is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    standalone = _submission(tmp_path, RED)
    work = tmp_path / "app"
    ingest = subprocess.run(
        [
            sys.executable,
            str(out / "ingestion_program" / "ingestion.py"),
            str(out / "input_data" / "test"),
            str(work / "input" / "res"),
            str(out / "ingestion_program"),
            str(standalone),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ingest.returncode == 0, ingest.stderr
    (work / "input" / "ref").mkdir(parents=True)
    (work / "input" / "ref" / "ref_test.csv").write_bytes((out / "reference_data" / "test" / "ref_test.csv").read_bytes())
    score = subprocess.run(
        [sys.executable, str(out / "scoring_program" / "score.py"), str(work / "input"), str(work / "output")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert score.returncode == 0, score.stderr
    board = json.loads((work / "output" / "scores.json").read_text())
    expected, _ = scoring.score_files(hybrids_dir / "ref_test.csv", work / "input" / "res" / "predictions.txt")
    assert board == expected
    # And a bad submission is reported by the standalone program with the file and image.
    crash = _submission(tmp_path / "c", RED.replace("return sum", "raise ValueError('boom') #"))
    bad = subprocess.run(
        [
            sys.executable,
            str(out / "ingestion_program" / "ingestion.py"),
            str(out / "input_data" / "test"),
            str(work / "res2"),
            str(out / "ingestion_program"),
            str(crash),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 1 and "crashed in predict() on image" in bad.stderr and "boom" in bad.stderr


def test_bundle_rejects_a_bad_reference(tmp_path):
    ref = tmp_path / "r.csv"
    ref.write_text("filename,hybrid_stat,ssp_indicator\na,0,major\n")
    with pytest.raises(DataError, match="group 'major' has 0 hybrid"):
        bundle.build_bundle(tmp_path / "b", val_ref=ref)
    assert not (tmp_path / "b").exists()


def test_download_lays_out_the_task_and_checks_md5(tmp_path):
    """The real download path, with a local "remote" (file:// URLs) standing in for GitHub and Zenodo."""
    import polars as pl

    remote = tmp_path / "remote"
    hybrids.make_fixture(remote, seed=1)
    csv_urls = {}
    for name, split in ((hybrids.TRAIN_CSV, "train"), ("ref_val.csv", "val"), ("ref_test.csv", "test")):
        df = pl.read_csv(remote / name, infer_schema=False)
        # Zenodo serves each image under another name; the CSV's `filename` is where it goes.
        urls = []
        for f in df["filename"]:
            served = remote / "zenodo" / f"{split}-{len(urls)}.bin"
            served.parent.mkdir(exist_ok=True)
            served.write_bytes((remote / split / f).read_bytes())
            urls.append(served.as_uri())
        df.with_columns(file_url=pl.Series(urls)).write_csv(remote / f"served-{name}")
        csv_urls[name] = (remote / f"served-{name}").as_uri()
    local = tmp_path / "local"
    resources = tuple(dataclasses.replace(r, url=csv_urls[r.filename]) for r in hybrids.RESOURCES)
    hybrids.SPEC.fetch(local, resources)
    images = hybrids.read(hybrids.Options(data=local)).images
    assert len(images) == 80 + 98 and all(Path(p).is_file() for p in images.paths)

    # A corrupted training image on the "server" fails its md5 and is named.
    train = pl.read_csv(remote / f"served-{hybrids.TRAIN_CSV}", infer_schema=False)
    victim = Path(train["file_url"][0].removeprefix("file://"))
    victim.write_bytes(b"corrupt")
    (local / "train" / train["filename"][0]).unlink()
    with pytest.raises(DataError, match=r"(?s)1 of 258 hybrids images failed to download.*CAM010000.jpg.*md5"):
        hybrids.SPEC.fetch(local, resources)


def test_cli_baseline_ingest_score_bundle(hybrids_dir, tmp_path, capsys):
    sub, res = tmp_path / "sub", tmp_path / "res"
    assert (
        cli.main(
            [
                "challenge",
                "baseline",
                "--backbone",
                "builtin:pixel-stats",
                "--train-csv",
                str(hybrids_dir / hybrids.TRAIN_CSV),
                "--images",
                str(hybrids_dir / "train"),
                "--out",
                str(sub),
                "--classifier",
                "sgd",
                "--n-workers",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((sub / "metadata.json").read_text())["classifier"] == "sgd"
    assert cli.main(["challenge", "ingest", "--submission", str(sub), "--images", str(hybrids_dir / "val"), "--out", str(res)]) == 0
    assert "80 images scored, 0 unreadable" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "challenge",
                "score",
                "--ref",
                str(hybrids_dir / "ref_val.csv"),
                "--pred",
                str(res / "predictions.txt"),
                "--out",
                str(res / "scores.json"),
            ]
        )
        == 0
    )
    assert json.loads((res / "scores.json").read_text())["challenge_score"] > 0.5
    assert cli.main(["challenge", "bundle", "--out", str(tmp_path / "b"), "--baseline", str(sub)]) == 0
    assert (tmp_path / "b" / "competition.yaml").is_file() and (tmp_path / "b" / "baselines" / "sub" / "classifier.pkl").is_file()
    # Missing training images are named before any model is loaded.
    assert (
        cli.main(
            [
                "challenge",
                "baseline",
                "--backbone",
                "builtin:pixel-stats",
                "--train-csv",
                str(hybrids_dir / hybrids.TRAIN_CSV),
                "--images",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "sub2"),
            ]
        )
        == 1
    )
    assert "80 of 80 images of 'hdr-train' are missing" in capsys.readouterr().err
