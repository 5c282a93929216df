"""Faults a newcomer or a bad day produce: nothing silently lost, merged or misleading.

Each test here failed before its fix: two checkpoints of one class sharing a key, a
read-only database, bad data found only after a model loaded, a truncated cache chunk, a
full disk, saturated challenge scores, a corrupt image discarding its neighbours'
features, n_train = 1 on binary tasks, tied ranks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import biobench
from biobench import cli, config, report, runner, store
from biobench.backbones import base, load_vision_backbone
from biobench.cache import FeatureCache
from biobench.config import Model
from biobench.embed import EmbedSettings, get_features
from biobench.errors import DataError
from tests.test_cache_embed import Counting, make_images
from tests.test_end_to_end import newt_config

###########################################################
# 1. An experiment's identity includes what pins its weights
###########################################################


class MyNet(biobench.VisionBackbone):
    """A custom backbone whose weights depend on its checkpoint name (as a real one's would)."""

    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        gen = torch.Generator().manual_seed(int(hashlib.md5(ckpt.encode()).hexdigest()[:8], 16))
        self.proj = torch.nn.Linear(3, 4)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(4, 3, generator=gen))
            self.proj.bias.zero_()

    def img_encode(self, batch):
        return biobench.EncodedImgBatch(self.proj(batch.mean(dim=(2, 3))), None)

    def make_img_transform(self):
        import torchvision.transforms.v2 as T

        return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Resize((16, 16))])


@pytest.fixture
def mine(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    biobench.register_vision_backbone("mine", MyNet)
    return "mine"


def evaluate(model, newt_dir, db, **kw):
    return biobench.evaluate(model, "newt", newt_dir, n_train=4, device="cpu", n_workers=0, n_bootstrap=20, db=db, **kw)


def test_two_checkpoints_of_one_custom_class_are_two_experiments(mine, newt_dir, tmp_path):
    db = tmp_path / "r.sqlite"
    a, b = evaluate(MyNet("v1"), newt_dir, db), evaluate(MyNet("v7"), newt_dir, db)
    assert (a.key.model, b.key.model) == ("mine:v1", "mine:v7")
    assert {r["model"] for r in report.load(db)} == {"mine:v1", "mine:v7"}  # two rows, nothing dropped
    # The config's name for the same backbone is the same experiment.
    assert Model.parse("mine:v1").name == "mine:v1"


def test_instances_without_a_checkpoint_are_named_by_their_weights(newt_dir, tmp_path):
    class Anonymous(MyNet):
        def __init__(self, seed: int):
            super().__init__(f"seed{seed}")
            self.ckpt = ""  # as a class that does not follow the ckpt convention

    from biobench.api import instance_model

    one, two = instance_model(Anonymous(1)), instance_model(Anonymous(2))
    assert one.org == "custom" and one.ckpt.startswith("Anonymous#weights=") and one.name != two.name
    assert instance_model(Anonymous(1)).name == one.name  # the same weights, the same name


def test_same_key_with_other_weights_is_an_error_not_a_skip(mine, newt_dir, tmp_path):
    db = tmp_path / "r.sqlite"
    evaluate(MyNet("v1"), newt_dir, db)
    retrained = MyNet("v1")
    with torch.no_grad():
        retrained.proj.bias.add_(1.0)
    with pytest.raises(store.StoreConflict, match="other weights"):
        evaluate(retrained, newt_dir, db)
    assert len(report.load(db)) == 1


def test_rewritten_local_weights_file_is_a_new_experiment(tmp_path):
    weights = tmp_path / "epoch9.pt"
    weights.write_bytes(b"first weights")
    m = Model("timm", f"resnet18@{weights}")
    first = m.key_ckpt
    assert first.startswith(f"resnet18@{weights}#weights=")
    weights.write_bytes(b"other weights")
    os.utime(weights, ns=(1, 1))  # even with a different mtime rule, the bytes decide
    assert Model("timm", f"resnet18@{weights}").key_ckpt != first
    assert Model("timm", "resnet18").key_ckpt == "resnet18"  # a published name is its own identity


##########################################################
# 2. Reports, cache listings and dry runs only read
##########################################################


def _read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_read_only_database_and_cache_can_be_reported_listed_and_planned(config_file, newt_dir, tmp_path, capsys):
    cfg_path = newt_config(config_file, newt_dir, extra="n_train = 4")
    runner.run(config.load(cfg_path))
    db = tmp_path / "results" / "results.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    _read_only(db)
    _read_only(db.parent)
    cache = Path(os.environ["BIOBENCH_CACHE"])
    _read_only(cache)
    try:
        with store.Store(db, readonly=True) as s:  # SQLite itself refuses writes, even for root
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                s.conn.execute("CREATE TABLE x (a)")
        assert cli.main(["report", "--db", str(db)]) == 0
        assert "builtin:pixel-stats" in capsys.readouterr().out
        assert cli.main(["run", str(cfg_path), "--dry-run"]) == 0
        assert "done" in capsys.readouterr().out
        assert cli.main(["cache", "ls"]) == 0
        assert "newt" in capsys.readouterr().out
    finally:
        for p in (db.parent, db, cache, *cache.rglob("*")):
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


####################################################################
# 3. Bad data is found before any model loads, in dry runs too
####################################################################


@pytest.mark.parametrize("case", ["empty", "other task"])
def test_bad_data_is_reported_before_any_model_loads(case, config_file, tmp_path, monkeypatch, capsys):
    from biobench.tasks import hybrids

    data = tmp_path / "data"
    data.mkdir()
    if case == "other task":
        hybrids.make_fixture(data, seed=0)
    loads = tmp_path / "loads.txt"
    monkeypatch.setenv("BIOBENCH_TEST_LOAD_FILE", str(loads))
    cfg_path = newt_config(config_file, data, models='org = "counting"\nckpt = "v1"', extra="n_train = 4")

    assert cli.main(["run", str(cfg_path), "--dry-run"]) == 1
    out = capsys.readouterr()
    assert "bad data" in out.out and "0 would run" in out.out
    expected = "is empty" if case == "empty" else "holds a hybrids dataset"
    assert expected in out.err and "biobench download newt" in out.err

    assert cli.main(["run", str(cfg_path)]) == 1
    assert expected in capsys.readouterr().err
    assert not loads.exists()  # no model was loaded, dry run or not


############################################################
# 4. A damaged cache chunk is quarantined and recomputed
############################################################


def counting():
    return load_vision_backbone("test-counting", "counting")


def test_truncated_chunk_is_quarantined_and_recomputed(tmp_path, caplog):
    images = make_images(tmp_path, 6)
    cache = FeatureCache(tmp_path / "cache")
    settings = EmbedSettings("cpu", 4, 0)
    first = get_features(counting(), images, cache, settings).features.copy()
    (chunk,) = cache.base.glob("*/chunk-*")
    with open(chunk / "features.npy", "r+b") as fd:
        fd.truncate(os.path.getsize(chunk / "features.npy") - 8)
    assert [e.damaged for e in cache.entries()] == [1]  # `cache ls` says so (and changes nothing)
    assert chunk.is_dir()

    Counting.images = 0
    with caplog.at_level(logging.WARNING):
        again = get_features(counting(), images, cache, settings)
    assert "damaged" in caplog.text and str(chunk) in caplog.text
    assert Counting.images == 6 and again.n_embedded == 6
    np.testing.assert_array_equal(again.features, first)
    assert not chunk.exists() and list(cache.base.glob("*/damaged-*"))
    assert get_features(counting(), images, cache, settings).n_embedded == 0  # the recomputed chunk is good


def test_cache_verify_checks_feature_checksums(tmp_path, capsys):
    cache = FeatureCache(tmp_path / "cache")
    get_features(counting(), make_images(tmp_path, 5), cache, EmbedSettings("cpu", 4, 0))
    assert cli.main(["cache", "verify", "--cache-dir", str(cache.root)]) == 0
    (chunk,) = cache.base.glob("*/chunk-*")
    feats = np.load(chunk / "features.npy", mmap_mode="r+")
    feats[2, 1] += 1.0  # silent corruption: same size and shape
    feats.flush()
    del feats
    assert cli.main(["cache", "verify", "--cache-dir", str(cache.root)]) == 1
    out = capsys.readouterr().out
    assert "checksum" in out and "1 damaged" in out
    assert not chunk.exists()


def test_cache_rm_of_an_unknown_model_is_an_error(tmp_path, capsys):
    cache = FeatureCache(tmp_path / "cache")
    get_features(counting(), make_images(tmp_path, 3), cache, EmbedSettings("cpu", 4, 0))
    assert cli.main(["cache", "rm", "--cache-dir", str(cache.root), "--model", "nope:x"]) == 1
    assert "cached models: test-counting:counting" in capsys.readouterr().err


###########################################################
# 5. A full disk: one clear line, the run stops, true counts
###########################################################


def test_full_disk_stops_the_run_with_one_line_and_true_counts(config_file, newt_dir, tmp_path, monkeypatch, capsys):
    cfg_path = newt_config(config_file, newt_dir, extra="n_train = [2, 4]\nseeds = [0, 1]")
    opened = store.Store.__init__

    def small_disk(self, path, **kw):
        opened(self, path, **kw)
        if not kw.get("readonly"):
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own 'database or disk is full'

    monkeypatch.setattr(store.Store, "__init__", small_disk)
    assert cli.main(["run", str(cfg_path)]) == 1
    err = capsys.readouterr()
    assert "database or disk is full" in err.err and "free space on the disk" in err.err
    assert "Traceback" not in err.err
    summary = err.out.strip().splitlines()[-1]
    # The first write fails: 1 failed, the other 3 never started (not "4 failed").
    assert summary.startswith("0 done, 0 run, 1 failed, 3 not started"), summary


######################################################################
# 6. Saturating probabilities cannot zero the challenge score
######################################################################


def test_saturating_sgd_scores_keep_their_order(tmp_path):
    from biobench.challenge import classifier, scoring

    rng = np.random.default_rng(0)
    # Training: hybrids far along one direction, so SGD learns a large weight.
    y = np.r_[np.zeros(200), np.ones(20)].astype(int)
    x = rng.normal(size=(220, 8))
    x[y == 1, 0] += 12
    clf = classifier.fit("sgd", x, y, seed=0)
    # Test: 10% of non-hybrids are far out too, the hybrids further still.
    t = rng.normal(size=(120, 8))
    labels = np.r_[np.zeros(100), np.ones(20)].astype(int)
    t[90:100, 0] += 60
    t[100:, 0] += 120
    groups = np.zeros(120, dtype=int)
    p = classifier.hybrid_probability(clf, t)
    assert (p[90:] == 1.0).all()  # the probabilities saturate: with them the score is 0
    assert scoring.challenge_metrics(p, labels, groups)["A.hybrid_recall"][0] == 0.0
    s = classifier.hybrid_score(clf, t)
    assert scoring.challenge_metrics(s, labels, groups)["A.hybrid_recall"][0] == 1.0
    ok = (p > 1e-6) & (p < 1 - 1e-6)  # where the probability is informative, the score is its log-odds
    np.testing.assert_allclose(s[ok], np.log(p[ok] / (1 - p[ok])), rtol=1e-6, atol=1e-6)


def test_svc_score_is_the_log_odds_of_its_probability():
    from biobench.challenge import classifier

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(60), np.ones(15)].astype(int)
    x = rng.normal(size=(75, 5)) + y[:, None] * 1.5
    clf = classifier.fit("svc", x, y, seed=0)
    t = rng.normal(size=(40, 5)) * 2
    p = classifier.hybrid_probability(clf, t)
    np.testing.assert_allclose(classifier.hybrid_score(clf, t), np.log(p / (1 - p)), rtol=1e-6, atol=1e-6)


###################################################################
# 7. A corrupt image keeps the other images' features
###################################################################


def test_corrupt_image_keeps_the_other_features(tmp_path):
    images = make_images(tmp_path, 9)
    bad = images.paths[4]
    bad.write_bytes(b"not an image")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(DataError) as err:
        get_features(counting(), images, cache, EmbedSettings("cpu", 4, 0))
    assert str(bad) in str(err.value) and "other 8 images are cached" in str(err.value)
    shutil.copyfile(images.paths[0], bad)  # the user fixes that one file
    Counting.images = 0
    again = get_features(counting(), images, cache, EmbedSettings("cpu", 4, 0))
    assert again.n_embedded == 1 and Counting.images == 1


######################################################
# 8. n_train = 1 on binary tasks, ties in the ranking
######################################################


def test_n_train_one_on_binary_tasks_warns(newt_dir, tmp_path, caplog):
    from biobench.backbones.builtin import PixelStats

    with caplog.at_level(logging.WARNING):
        biobench.evaluate(PixelStats(), "newt", newt_dir, n_train=1, device="cpu", n_workers=0, n_bootstrap=20)
    assert "single class among their training examples" in caplog.text


def test_tied_scores_share_a_rank():
    rows = [
        {"task": "newt", "n_train": 1, "model": m, "method": "cvml", "protocol": "newt/v1", "metric": "accuracy",
         "score": s, "ci_low": s - 0.1, "ci_high": s + 0.1, "n_test": 10, "seed": 0}
        for m, s in (("a:x", 0.5), ("b:x", 0.5), ("c:x", 0.7), ("d:x", 0.4))
    ]  # fmt: skip
    ranks = {r["model"]: r["rank"] for r in report.leaderboard(rows)}
    assert ranks == {"c:x": 1, "a:x": 2, "b:x": 2, "d:x": 4}
