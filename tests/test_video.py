"""The shared video helper: evenly spaced positions, frames decoded once into the cache, bad videos skipped and remembered."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from biobench import fixtures, video


def numbered_clip(path, n: int) -> None:
    """A clip whose frame k is a flat grey of brightness 4k (so a decoded frame tells its position)."""
    fixtures.save_mp4([Image.new("RGB", (32, 32), (4 * k,) * 3) for k in range(n)], path)


def position(path) -> int:
    return round(float(np.asarray(Image.open(path)).mean()) / 4)


def test_evenly_spaced_is_the_stride_of_the_original_extraction():
    assert video.evenly_spaced(100, 32).tolist() == [3 * k for k in range(32)]
    assert video.evenly_spaced(32, 32).tolist() == list(range(32))
    assert video.evenly_spaced(10, 4).tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError):
        video.evenly_spaced(31, 32)


def test_extract_writes_the_sampled_frames_once(tmp_path):
    clip = tmp_path / "a.mp4"
    numbered_clip(clip, 50)
    paths = video.extract(clip, tmp_path / "frames" / "a", 8)
    assert [p.name for p in paths] == [f"frame_{k:02d}.jpg" for k in range(1, 9)]
    assert [position(p) for p in paths] == video.evenly_spaced(50, 8).tolist() == [6 * k for k in range(8)]
    before = [p.stat().st_mtime_ns for p in paths]
    assert video.extract(clip, tmp_path / "frames" / "a", 8) == paths  # cached: nothing rewritten
    assert [p.stat().st_mtime_ns for p in paths] == before
    assert sorted(os.listdir(tmp_path / "frames")) == ["a"]  # no temporary folder left


def test_a_replaced_video_or_another_frame_count_is_decoded_again(tmp_path):
    clip, dest = tmp_path / "a.mp4", tmp_path / "frames" / "a"
    numbered_clip(clip, 40)
    video.extract(clip, dest, 8)
    numbered_clip(clip, 24)  # a different video at the same path
    assert [position(p) for p in video.extract(clip, dest, 8)] == [3 * k for k in range(8)]
    assert len(video.extract(clip, dest, 4)) == 4 and not (dest / "frame_05.jpg").exists()


def test_bad_videos_are_skipped_counted_and_not_decoded_twice(tmp_path, caplog, monkeypatch):
    good, short, broken = tmp_path / "good.mp4", tmp_path / "short.mp4", tmp_path / "broken.mp4"
    numbered_clip(good, 20)
    numbered_clip(short, 5)
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    clips = [(good, tmp_path / "f" / "good"), (short, tmp_path / "f" / "short"), (broken, tmp_path / "f" / "broken")]
    got = video.cache_frames("demo", clips, 8)
    assert got[0] is not None and got[1] is None and got[2] is None
    assert "skipped 2 of 3 videos" in caplog.text and "broken.mp4 cannot be decoded" in caplog.text and "5 frames" in caplog.text
    assert (tmp_path / "f" / "broken.failed").is_file() and not (tmp_path / "f" / "broken").exists()
    calls = []
    monkeypatch.setattr(video, "read_frames", lambda *a, **k: calls.append(a) or [])
    assert video.cache_frames("demo", clips, 8)[1:] == [None, None] and calls == []  # remembered, not decoded again
    monkeypatch.undo()
    numbered_clip(broken, 12)  # fixed: decoded now
    assert video.cache_frames("demo", clips, 8)[2] is not None and not (tmp_path / "f" / "broken.failed").exists()


def test_read_frames_raises_a_named_error_for_a_file_that_is_not_a_video(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_text("hello")
    with pytest.raises(video.VideoError, match="x.mp4 cannot be decoded"):
        video.read_frames(bad, 4)
