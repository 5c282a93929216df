"""Sampled video frames, decoded once with PyAV into a frame cache beside the data.

Video tasks embed a few frames per clip. `cache_frames` decodes each clip's sampled frames
into `CACHE/<clip>/frame_01.jpg, frame_02.jpg, ...` (JPEG, quality 95) and returns their
paths; later runs find them and decode nothing. Each clip's folder is written under a
temporary name and renamed into place when complete, with a stamp recording the video's
size and modification time and the number of frames, so an interrupted run leaves no
half-written folder and a replaced video is decoded again.

A video that cannot be decoded (corrupt, truncated, no video stream) or that has fewer
frames than are sampled is a counted, logged skip: `cache_frames` returns None for it, and
remembers why in `CACHE/<clip>.failed` (keyed by the video's size and modification time),
so a later run skips it without decoding it again. A missing video file is the caller's
decision (tasks treat it as a `DataError`).

Frames are counted by demuxing the video stream's packets (no decoding), then decoded in
presentation order; if the decoder yields fewer frames than the container had packets, the
positions are chosen again from the decoded count.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from jaxtyping import Int

from biobench.errors import DataError
from biobench.progress import Progress

logger = logging.getLogger(__name__)

STAMP = ".source"
"""File in each clip's frame folder: the video's size, mtime and the frame count it was sampled with."""
JPEG_QUALITY = 95


class VideoError(DataError):
    """A video could not be decoded, or has too few frames to sample."""


def frame_name(k: int) -> str:
    """File name of the k-th sampled frame (1-based): frame_01.jpg, as the original biobench's extraction names them."""
    return f"frame_{k:02d}.jpg"


def evenly_spaced(n_total: int, n_frames: int) -> Int[np.ndarray, " n_frames"]:
    """Positions 0, s, 2s, ..., (n_frames - 1) s with stride s = n_total // n_frames (the original biobench's
    `select='not(mod(n, s))'` with `vframes = n_frames`); needs `n_total >= n_frames >= 1`."""
    if n_frames < 1 or n_total < n_frames:
        raise ValueError(f"Cannot sample {n_frames} frames from a clip of {n_total}.")
    return (n_total // n_frames) * np.arange(n_frames)


Sampler = Callable[[int, int], np.ndarray]


def _stamp(video: Path, n_frames: int) -> str:
    st = video.stat()
    return f"{st.st_size} {st.st_mtime_ns} {n_frames}"


def _count_packets(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream.")
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size > 0)


def _decode(path: Path, positions: np.ndarray) -> tuple[list, int]:
    """The frames at `positions` (sorted) as PIL images, and how many frames were decoded."""
    import av

    wanted, out, n = set(int(p) for p in positions), [], 0
    last = int(positions.max())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if n in wanted:
                out.append(frame.to_image())
            n += 1
            if n > last:
                break
    return out, n


def read_frames(path: Path, n_frames: int, sample: Sampler = evenly_spaced) -> list:
    """The `n_frames` sampled frames of the video at `path`, as RGB PIL images; `VideoError` if it cannot."""
    import av

    try:
        n_total = _count_packets(path)
        if n_total < n_frames:
            raise VideoError(f"{path} has {n_total} frames, fewer than the {n_frames} sampled.")
        positions = np.asarray(sample(n_total, n_frames))
        frames, decoded = _decode(path, positions)
        if len(frames) < n_frames:  # fewer decodable frames than packets: sample from what decodes
            _, decoded = _decode(path, np.array([n_total + 1]))  # decode everything to count
            if decoded < n_frames:
                raise VideoError(f"{path} decodes to {decoded} frames, fewer than the {n_frames} sampled.")
            frames, _ = _decode(path, np.asarray(sample(decoded, n_frames)))
    except av.error.FFmpegError as err:
        raise VideoError(f"{path} cannot be decoded ({err}).") from None
    return [f.convert("RGB") for f in frames]


def extract(video: Path, dest: Path, n_frames: int, sample: Sampler = evenly_spaced) -> list[Path]:
    """Paths of `video`'s sampled frames in `dest`, decoding them first unless `dest` already holds them
    for this video (same size and mtime) and `n_frames`; raises `VideoError` for an undecodable video."""
    video, dest = Path(video), Path(dest)
    paths = [dest / frame_name(k) for k in range(1, n_frames + 1)]
    stamp = _stamp(video, n_frames)
    if (dest / STAMP).is_file() and (dest / STAMP).read_text().strip() == stamp and all(p.is_file() for p in paths):
        return paths
    frames = read_frames(video, n_frames, sample)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir()
        for img, p in zip(frames, paths):
            img.save(tmp / p.name, format="JPEG", quality=JPEG_QUALITY)
        (tmp / STAMP).write_text(stamp + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # a stale or partial folder from another video or sampling
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return paths


def cache_frames(
    task: str,
    clips: Sequence[tuple[Path, Path]],
    n_frames: int,
    *,
    sample: Sampler = evenly_spaced,
    workers: int | None = None,
) -> list[list[Path] | None]:
    """For each (video, frame folder) pair, the sampled frames' paths, or None for a video that cannot be
    decoded or is too short (counted and logged as skipped). Decodes on `workers` threads (default: CPUs, at most 8)."""
    workers = workers or min(8, os.cpu_count() or 1)

    def one(pair: tuple[Path, Path]) -> list[Path] | str:
        video, dest = Path(pair[0]), Path(pair[1])
        failed = dest.with_name(dest.name + ".failed")
        stamp = _stamp(video, n_frames)
        if failed.is_file():
            first, _, reason = failed.read_text().partition("\n")
            if first == stamp:
                return reason.strip()
            failed.unlink()
        try:
            return extract(video, dest, n_frames, sample)
        except VideoError as err:
            dest.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(f"{stamp}\n{err}\n")
            return str(err)

    todo = len(clips)
    out: list[list[Path] | None] = []
    reasons: list[str] = []
    with Progress(todo, f"{task}: frames", "clips") as bar, ThreadPoolExecutor(workers) as pool:
        for got in pool.map(one, clips):
            if isinstance(got, str):
                out.append(None)
                reasons.append(got)
            else:
                out.append(got)
            bar.update(1)
    if reasons:
        shown = "\n  ".join(reasons[:5])
        logger.warning("%s: skipped %d of %d videos that cannot be decoded or are too short, e.g.\n  %s", task, len(reasons), todo, shown)
    return out
