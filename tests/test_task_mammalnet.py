"""MammalNet: the layout's bad inputs, skipped videos, the frame cache and the protocol's choices."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from biobench.errors import DataError
from biobench.probes import Logistic, SimpleShot
from biobench.routes.probe import pooled
from biobench.tasks import get_task
from biobench.tasks.mammalnet import Options, make_fixture, read

SPEC = get_task("mammalnet")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mammalnet")
    make_fixture(root / "data")
    return root / "data"


@pytest.fixture
def data(fixture_dir, tmp_path):
    """A fresh copy (tests edit it), without the frame cache."""
    shutil.copytree(fixture_dir, tmp_path / "d", ignore=shutil.ignore_patterns("frames"))
    return tmp_path / "d"


def csv_lines(data, stem):
    return (data / "annotation" / "composition" / f"{stem}.csv").read_text().splitlines()


def write_lines(data, stem, lines):
    (data / "annotation" / "composition" / f"{stem}.csv").write_text("\n".join(lines) + "\n")


def test_clips_pool_32_frames_and_bad_videos_are_skipped(data, caplog):
    ex = read(Options(data=data))
    per_clip = ex.table.group_by("id").len()
    assert per_clip["len"].to_list() == [32] * per_clip.height and per_clip.height == 18  # 20 listed, 2 skipped
    assert not any(i.startswith("broken") for i in ex.table["id"])
    assert "skipped 2 of 20 videos" in caplog.text
    assert ex.pool == "max" and set(ex.table["behaviour"]) == {"drink water", "groom", "sleep"}
    assert ex.names("")[6] == "groom" and ex.table.filter(ex.table["label"] == 6)["behaviour"][0] == "groom"
    assert all(str(p).startswith(str(data / "frames" / "32")) for p in ex.images.paths)


def test_pooling_takes_the_max_over_a_clips_frames(data):
    ex = read(Options(data=data))
    feats = np.random.default_rng(0).normal(size=(len(ex.images), 3))
    table, x = pooled(ex, feats)
    first = ex.table["id"][0]
    rows = ex.table.filter(ex.table["id"] == first)["image"].to_numpy()
    assert table["id"][0] == first and np.allclose(x[0], feats[rows].max(axis=0))


def test_options_choose_frames_pool_and_probe(data):
    ex = read(Options(data=data, n_frames=8, pool="mean"))
    assert ex.pool == "mean" and set(ex.table.group_by("id").len()["len"]) == {8}
    assert (data / "frames" / "8").is_dir()
    assert isinstance(SPEC.probe_for(Options(data=data)), Logistic)
    assert isinstance(SPEC.probe_for(Options(data=data, probe="simpleshot")), SimpleShot)


def test_the_csvs_own_path_is_accepted(data):
    (data / "trimmed_video").rename(data / "trimmed_videos")
    assert read(Options(data=data)).table["id"].n_unique() == 18


def test_a_missing_video_is_an_error_naming_it(data):
    clip = csv_lines(data, "test")[0].split()[0]
    (data / "trimmed_video" / clip.split("/")[1]).unlink()
    with pytest.raises(DataError, match=r"(?s)1 of 20 .*test.csv line 1.*" + clip.split("/")[1]):
        read(Options(data=data))


def test_a_clip_listed_twice_is_an_error(data):
    write_lines(data, "test", csv_lines(data, "test") + [csv_lines(data, "train")[0]])
    with pytest.raises(DataError, match=r"listed more than once \(.*train.csv line 1, .*test.csv line 11\)"):
        read(Options(data=data))


@pytest.mark.parametrize(
    ("line", "match"),
    [("trimmed_videos/x.mp4 groom 3", "line 2: behaviour_id must be an integer, got 'groom'"),
     ("trimmed_videos/x.mp4 1", "line 2: genus_id must be filled in"),
     ("trimmed_videos/x.mp4 99 3", "line 2: behaviour id 99 is not in behavior_to_id.txt")],
)  # fmt: skip
def test_a_bad_line_is_an_error_naming_it(data, line, match):
    write_lines(data, "train", [csv_lines(data, "train")[0], line])
    with pytest.raises(DataError, match=match):
        read(Options(data=data))


def test_a_missing_csv_names_it(data):
    (data / "annotation" / "composition" / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test.csv not found.*biobench download mammalnet"):
        read(Options(data=data))


def test_without_behavior_to_id_the_names_are_the_ids(data):
    (data / "annotation" / "behavior_to_id.txt").unlink()
    assert set(read(Options(data=data)).table["behaviour"]) == {"1", "6", "10"}


def test_a_malformed_behaviour_map_is_an_error(data):
    (data / "annotation" / "behavior_to_id.txt").write_text("eat food\t0\ndrink water one\n")
    with pytest.raises(DataError, match="behavior_to_id.txt line 2"):
        read(Options(data=data))
