"""KABR: the Charades-format reader, frame selection, clip labels, pooling, sub-scores and the split-archive download."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from biobench import stats
from biobench.errors import DataError
from biobench.routes.probe import pooled
from biobench.tasks import kabr

HEADER = "original_vido_id video_id frame_id path labels"


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kabr")
    kabr.make_fixture(d, seed=0)
    return d


def write_clips(root: Path, clips: dict[str, list[tuple[str, int, list[int]]]]) -> Path:
    """Annotation CSVs for `{stem: [(original video, video_id, frame labels), ...]}`, with empty frame files."""
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    for stem in ("train", "val"):
        lines = [HEADER]
        for orig, video, labels in clips.get(stem, []):
            for f, label in enumerate(labels, start=1):
                path = root / "dataset" / "image" / f"{orig}.{video}" / f"{f}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
                lines.append(f"{orig} {video} {f} {orig}.{video}/{f}.jpg {label}")
        (root / "annotation" / f"{stem}.csv").write_text("\n".join(lines) + "\n")
    return root


def chosen_frames(examples, clip_id: str) -> list[int]:
    """Frame numbers (from the file names) of a clip's rows, in row order."""
    rows = examples.table.filter(examples.table["id"] == clip_id)["image"].to_list()
    return [int(Path(examples.images.paths[i]).stem) for i in rows]


def test_fixture_is_in_the_kabr_format(fixture_dir):
    for stem in ("train", "val"):
        lines = (fixture_dir / "annotation" / f"{stem}.csv").read_text().splitlines()
        assert lines[0] == HEADER
        for line in lines[1:]:
            orig, video, frame, path, label = line.split(" ")
            assert int(video) > 0 and int(frame) > 0 and int(label) in range(8)
            assert path.startswith(f"{orig}.") and (fixture_dir / "dataset" / "image" / path).is_file()
    assert json.loads((fixture_dir / "annotation" / "classes.json").read_text())["Head Up"] == 3

    ex = kabr.read(kabr.Options(data=fixture_dir))
    t = ex.table
    assert set(t["split"].unique()) == {"train", "test"} and ex.pool == "mean" and ex.info == ("behaviour",)
    assert (t.group_by("id").len()["len"] == 16).all()  # 16 chosen frames per clip
    assert len(ex.images) == t.height == t["image"].n_unique()  # each frame image once
    assert set(t["behaviour"]) == {"Walk", "Graze", "Head Up"}
    assert all(ex.names("")[lab] == b for lab, b in t.select("label", "behaviour").iter_rows())
    # The 10-frame val clip is dropped (under 16 frames), as the original drops it.
    val = (fixture_dir / "annotation" / "val.csv").read_text().splitlines()[1:]
    lengths: dict[str, int] = {}
    for line in val:
        lengths[line.split(" ")[1]] = lengths.get(line.split(" ")[1], 0) + 1
    short = [v for v, n in lengths.items() if n < 16]
    assert short and not set(f"val/{v}" for v in short) & set(t["id"])
    # group = the original video of the clip.
    orig_of = {f"val/{line.split(' ')[1]}": line.split(" ")[0] for line in val}
    assert all(orig_of[i] == g for i, g in t.filter(t["split"] == "test").select("id", "group").iter_rows())


def test_missing_frame_names_the_csv_and_frame(tmp_path):
    root = write_clips(tmp_path, {"train": [("G0001", 1, [0] * 20)], "val": [("G0002", 2, [1] * 20)]})
    (root / "dataset" / "image" / "G0002.2" / "7.jpg").unlink()
    with pytest.raises(DataError) as err:
        kabr.read(kabr.Options(data=root))
    msg = str(err.value)
    assert str(root / "annotation" / "val.csv") in msg and "video 2 frame 7" in msg and "G0002.2/7.jpg" in msg


@pytest.mark.parametrize(
    "old, new, expect",
    [
        ("G0001.1/3.jpg 0", "G0001.1/3.jpg walk", "line 4: labels must be an integer, got 'walk'"),
        ("G0001.1/3.jpg 0", "G0001.1/3.jpg 8", "line 4: labels must be one of 0, 1, 2, 3, 4, 5, 6, 7, got 8"),
        ("G0001 1 3 ", "G0001 x 3 ", "line 4: video_id must be an integer, got 'x'"),
        ("G0001 1 3 ", "G0001 1 5 ", "line 4: video 1 jumps to frame 5"),
        (HEADER, "original_vido_id video_id frame_id path label", "lacks column(s) 'labels'"),
    ],
)
def test_bad_rows_name_the_csv_and_line(tmp_path, old, new, expect):
    root = write_clips(tmp_path, {"train": [("G0001", 1, [0] * 20)], "val": [("G0002", 2, [1] * 20)]})
    csv = root / "annotation" / "train.csv"
    csv.write_text(csv.read_text().replace(old, new, 1))
    with pytest.raises(DataError) as err:
        kabr.read(kabr.Options(data=root))
    assert str(csv) in str(err.value) and expect in str(err.value)


def test_bad_classes_json(tmp_path):
    root = write_clips(tmp_path, {"train": [("G0001", 1, [0] * 20)], "val": [("G0002", 2, [0] * 20)]})
    (root / "annotation" / "classes.json").write_text('{"Walk": 0, "Graze": 2}')
    with pytest.raises(DataError, match="classes.json must map each behaviour name to its index"):
        kabr.read(kabr.Options(data=root))


def test_frames_are_16_spaced_5_from_a_seeded_start(tmp_path):
    long = [("G0001", v, [0] * 100) for v in range(1, 9)]
    root = write_clips(tmp_path / "a", {"train": long, "val": [("G0002", 50, [0] * 40), ("G0003", 51, [0] * 16)]})
    ex = kabr.read(kabr.Options(data=root))
    starts = []
    for v in range(1, 9):
        frames = chosen_frames(ex, f"train/{v}")
        assert len(frames) == 16 and np.all(np.diff(frames) == 5) and 1 <= frames[0] and frames[-1] <= 100
        starts.append(frames[0])
    assert len(set(starts)) > 1  # the start is drawn, not fixed
    # Shorter clips: the stride shrinks until 16 frames fit (40 frames: every 2nd; 16 frames: all), as in the original.
    assert np.all(np.diff(chosen_frames(ex, "val/50")) == 2) and chosen_frames(ex, "val/51") == list(range(1, 17))

    again = kabr.read(kabr.Options(data=root))
    assert again.table.equals(ex.table) and list(again.images.paths) == list(ex.images.paths)
    other = kabr.read(kabr.Options(data=root, frame_seed=1))
    assert [chosen_frames(other, f"train/{v}")[0] for v in range(1, 9)] != starts
    # A clip's frames depend on the seed and its own id only, not on which other clips are listed.
    alone = write_clips(tmp_path / "b", {"train": [long[3]], "val": [("G0002", 50, [0] * 40)]})
    assert chosen_frames(kabr.read(kabr.Options(data=alone)), "train/4") == chosen_frames(ex, "train/4")


def test_clip_label_is_the_mode_of_the_chosen_frames(tmp_path):
    # 31 frames: stride 2 and start 0, so the 16 odd-numbered frames are chosen. Over the whole clip Graze (1) is
    # the most common label, over the chosen frames Head Up (3) is.
    labels = [1] * 31
    for k in range(0, 31, 2)[:9]:
        labels[k] = 3
    tie = [0, 5] * 8  # 16 frames, all chosen, 8 Walk and 8 Trot: the smaller index wins (torch.mode)
    root = write_clips(tmp_path, {"train": [("G0001", 1, labels)], "val": [("G0002", 2, tie)]})
    t = kabr.read(kabr.Options(data=root)).table
    assert max(set(labels), key=labels.count) == 1
    assert set(t.filter(t["id"] == "train/1")["label"]) == {3}
    assert set(t.filter(t["id"] == "train/1")["behaviour"]) == {"Head Up"}
    assert set(t.filter(t["id"] == "val/2")["label"]) == {0}


def test_mean_and_max_pooling(fixture_dir):
    mean = kabr.Options(data=fixture_dir)
    feats = np.random.default_rng(0).normal(size=(len(kabr.read(mean).images), 6)).astype(np.float32)
    table_mean, x_mean = pooled(kabr.read(mean), feats)
    ex_max = kabr.read(dataclasses.replace(mean, pool="max"))
    table_max, x_max = pooled(ex_max, feats)
    assert table_mean["id"].to_list() == table_max["id"].to_list() == table_mean["id"].unique(maintain_order=True).to_list()
    rows = ex_max.table.filter(ex_max.table["id"] == table_max["id"][0])["image"].to_numpy()
    np.testing.assert_allclose(x_mean[0], feats[rows].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(x_max[0], feats[rows].max(0))
    assert not np.allclose(x_mean, x_max)
    # Max pooling is a protocol change: its options differ from the default ones (and so does the protocol id).
    assert dataclasses.replace(mean, pool="max") != mean and kabr.Options(data=fixture_dir).pool == "mean"


def test_scores_break_down_by_behaviour_and_resample_original_videos(fixture_dir):
    from biobench.evaluation import EvalContext
    from biobench.routes.probe import evaluate

    options = kabr.Options(data=fixture_dir)
    ex = kabr.read(options)
    # Features: the frame's clip label, one-hot, plus noise (the contract test embeds the fixture with pixel-stats).
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 0.7, size=(len(ex.images), 8))
    feats[ex.table["image"].to_numpy(), ex.table["label"].to_numpy()] += 1.0
    report = evaluate(kabr.SPEC, options, ex, feats, EvalContext(n_train=-1, seed=0, n_bootstrap=200))
    test = ex.table.filter(ex.table["split"] == "test").unique("id", maintain_order=True)
    assert list(report.example_ids) == test["id"].to_list()  # one prediction per val clip
    assert set(report.sub_scores["behaviour"]) == {"Walk", "Graze", "Head Up"}
    assert sum(s["n_test"] for s in report.sub_scores["behaviour"].values()) == test.height
    assert report.example_info[0]["behaviour"] == test["behaviour"][0]
    assert kabr.SPEC.metric.resample == "clustered"
    ci = stats.cluster_mean_ci(report.example_scores, test["group"].to_numpy(), n_resamples=200, seed=0)
    assert (report.ci_low, report.ci_high) == pytest.approx((ci.low, ci.high))


def test_resources_are_the_annotation_files_and_each_species_split_zip():
    names = [r.filename for r in kabr.RESOURCES]
    assert names == ["annotation/classes.json", "annotation/train.csv", "annotation/val.csv",
                     "giraffes.zip", "zebras_grevys.zip", "zebras_plains.zip"]  # fmt: skip
    grevys = kabr.RESOURCES[4]
    assert len(grevys.url) == 13 and grevys.url[0].endswith("dataset/image/zebras_grevys_part_aa")
    assert grevys.md5_url.endswith("zebras_grevys_md5.txt") and grevys.into == "dataset/image" and grevys.extract
