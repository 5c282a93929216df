"""The one feature-extraction path every task uses: images -> batches -> backbone -> cached vectors.

`get_features` looks every image up in the `FeatureCache` first and runs the backbone
only on the misses, so a second request for the same images (another n_train, another
seed, another task over the same files) performs zero forward passes. Extraction runs
under `torch.inference_mode`, with bf16/fp16 autocast on CUDA, and halves the batch when
the accelerator runs out of memory. Partial results are checkpointed into the cache, so a
crash or Ctrl-C loses little.

Images are read, decoded and transformed by `n_workers` threads, a couple of batches ahead
of the forward pass, along one of two paths (`EmbedSettings.decode`, part of the cache key):
`exact`, the backbone's own PIL transform, and `fast`, tensor JPEG decoding and the same
transform replayed as tensor ops (`biobench.fastpath`; batched on the GPU under CUDA), with
the exact path per image for anything else. Per-stage seconds come back in `EmbedResult.timings`."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float

from biobench import fastpath
from biobench.backbones.base import VisionBackbone, fingerprint
from biobench.cache import FeatureCache
from biobench.errors import DataError
from biobench.images import ImageSet, KeyMode, decode_rgb, read_image_bytes
from biobench.progress import Progress

logger = logging.getLogger(__name__)

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclasses.dataclass(frozen=True)
class EmbedSettings:
    """How to run extraction."""

    device: str = "cpu"
    """torch device: cpu, cuda, cuda:1, mps."""
    batch_size: int = 256
    """Images per forward pass (halved automatically on out-of-memory)."""
    n_workers: int = 4
    """DataLoader worker processes decoding images; 0 decodes in the main process."""
    key_mode: KeyMode = "stat"
    """How images are identified in the cache: 'stat' (path, size, mtime) or 'content' (hash of bytes)."""
    checkpoint_every: int = 20_000
    """Write finished features to the cache every this many images, so a crash loses little."""
    decode: Decode | None = None
    """Preprocessing path: 'exact' (the backbone's own PIL transform), 'fast' (tensor JPEG decode and transform,
    on the GPU under CUDA; `biobench.fastpath`); None = fast on CUDA, exact elsewhere. Part of the cache key."""


@dataclasses.dataclass(frozen=True)
class EmbedResult:
    """Features of an image set (row i = image i) and how they were obtained."""

    features: Float[np.ndarray, "n dim"]
    n_cached: int
    """Images served from the cache."""
    n_embedded: int
    """Images run through the backbone."""
    seconds: float
    image_set_fingerprint: str
    backbone_fingerprint: str
    """`biobench.backbones.fingerprint`: the weights and transform (not the precision), as results record it."""
    decode: str = "exact"
    """The preprocessing path the embedded images took ('exact' or 'fast'; that of the request when all were cached)."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds per stage of the extraction (`STAGES`, plus n_fast, n_fallback and wall); empty when all were cached."""


CPU_MICRO_BATCH = 32
"""Images per forward pass on CPU (progress is reported per pass)."""


def cache_key(backbone: VisionBackbone, device: str, decode: Decode = "exact") -> str:
    """The cache's key for `backbone` run on `device`: its fingerprint plus the numeric precision,
    since autocast changes the numbers and features of different precisions must never mix, plus
    the preprocessing path when it is the fast one (exact-path keys are those from before it existed).

    Recomputed on every request (about a second per GB of weights), never memoised on the
    instance: a user evaluating the same object after more training must not get the old
    features back."""
    return _cache_key(fingerprint(backbone), device, decode)


def _cache_key(backbone_fingerprint: str, device: str, decode: Decode = "exact") -> str:
    parts = [backbone_fingerprint, precision_label(torch.device(device))]
    if decode != "exact":
        parts.append(f"decode={decode}")
    return _digest(*parts)


def get_features(backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings = EmbedSettings()) -> EmbedResult:
    """Features for every image in `images`, from the cache where possible."""
    start = time.perf_counter()
    keys = images.keys(settings.key_mode)
    set_fp = images.fingerprint(keys)
    backbone_fp = fingerprint(backbone)
    path = choose_path(backbone, settings)
    decode = path[0]
    fp = _cache_key(backbone_fp, settings.device, decode)
    cached, found = cache.lookup(fp, keys)
    missing = np.flatnonzero(~found)
    if len(missing) == 0:
        assert cached is not None or len(images) == 0
        feats = cached if cached is not None else np.zeros((0, 0), dtype=np.float32)
        logger.info("%s on %s: all %d images cached.", backbone.name, images.name, len(images))
        return EmbedResult(feats, len(images), 0, time.perf_counter() - start, set_fp, backbone_fp, decode)

    logger.info("%s on %s: %d images cached, embedding %d.", backbone.name, images.name, len(images) - len(missing), len(missing))

    checkpoint = _cache_writer(backbone, images, cache, settings, fp, keys, set_fp, decode)
    timings: dict[str, float] = {}
    new = extract(backbone, images, missing, settings, checkpoint, timings=timings, path=path)
    if cached is None:
        out = np.empty((len(images), new.shape[1]), dtype=np.float32)
    else:
        out = np.array(cached, dtype=np.float32)  # copy: the lookup may be a read-only map
    out[missing] = new
    return EmbedResult(out, len(images) - len(missing), len(missing), time.perf_counter() - start, set_fp, backbone_fp, decode, timings)


def _cache_writer(
    backbone: VisionBackbone,
    images: ImageSet,
    cache: FeatureCache,
    settings: EmbedSettings,
    fp: str,
    keys: np.ndarray,
    set_fp: str,
    decode: str = "exact",
) -> Callable[[np.ndarray, np.ndarray], None]:
    """`extract`'s checkpoint: each call stores one chunk (atomic); a cache that cannot be written is warned about once."""
    cache_ok = True

    def checkpoint(rows: np.ndarray, feats: np.ndarray) -> None:
        nonlocal cache_ok
        if not cache_ok:
            return
        try:
            cache.put(
                fp,
                keys[rows],
                feats,
                dataset=images.name,
                backbone_info={"name": backbone.name, "org": backbone.org, "ckpt": backbone.ckpt},
                extra={"image_set_fingerprint": set_fp, "key_mode": settings.key_mode, "decode": decode},
            )
        except OSError as err:
            # The features are in memory and the run can finish; only reuse is lost.
            cache_ok = False
            logger.warning(
                "Cannot write the feature cache at %s (%s); continuing without caching. "
                "Set cache_dir in the config (or BIOBENCH_CACHE) to a writable directory with free space.",
                cache.root,
                err,
            )

    return checkpoint


def shard_rows(n: int, shard: int, n_shards: int) -> np.ndarray:
    """The rows of an n-image set that shard `shard` of `n_shards` embeds: every n_shards-th, whatever is cached already."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}.")
    return np.arange(shard, n, n_shards)


def embed_shard(backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings, shard: int, n_shards: int) -> int:
    """Embed one shard of `images` into the cache (sharded extraction of a large task across workers); returns images embedded.

    Each shard writes its own chunks through `FeatureCache.put` (temporary directory, then rename; checksummed), so a
    shard killed mid-write leaves no chunk a lookup accepts. The set is complete when every shard's chunks are
    present: `get_features` then embeds nothing, and otherwise embeds only what a missing shard lacked."""
    keys = images.keys(settings.key_mode)
    path = choose_path(backbone, settings)
    fp = _cache_key(fingerprint(backbone), settings.device, path[0])
    rows = shard_rows(len(images), shard, n_shards)
    _, found = cache.lookup(fp, keys[rows])
    todo = rows[~found]
    if len(todo):
        logger.info("%s on %s, shard %d/%d: embedding %d images.", backbone.name, images.name, shard + 1, n_shards, len(todo))
        writer = _cache_writer(backbone, images, cache, settings, fp, keys, images.fingerprint(keys), path[0])
        extract(backbone, images, todo, settings, writer, path=path)
    return len(todo)


def missing_shards(backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings, n_shards: int) -> list[int]:
    """The shards whose images are not all in the cache (valid chunks only); [] = the feature set is complete."""
    keys = images.keys(settings.key_mode)
    fp = _cache_key(fingerprint(backbone), settings.device, choose_path(backbone, settings)[0])
    _, found = cache.lookup(fp, keys)
    return [i for i in range(n_shards) if not found[shard_rows(len(images), i, n_shards)].all()]


Decode = Literal["exact", "fast"]


def resolve_decode(decode: Decode | None, device: str) -> Decode:
    """The preprocessing path a setting asks for: None means fast on CUDA, exact elsewhere."""
    if decode is None:
        return "fast" if torch.device(device).type == "cuda" else "exact"
    if decode not in ("exact", "fast"):
        raise ValueError(f"decode must be 'exact' or 'fast', got {decode!r}.")
    return decode


def choose_path(backbone: VisionBackbone, settings: EmbedSettings) -> tuple[Decode, fastpath.Plan | None]:
    """(path used, tensor plan for the fast path): the fast path falls back to exact, with the reason logged,
    when the backbone's transform has no tensor replay."""
    if resolve_decode(settings.decode, settings.device) == "exact":
        return "exact", None
    planned = fastpath.plan(backbone.make_img_transform())
    if isinstance(planned, str):
        logger.warning("%s: decode = 'fast' falls back to the exact path: the transform %s.", backbone.name, planned)
        return "exact", None
    return "fast", planned


@dataclasses.dataclass
class _Item:
    """One image's preprocessing result, from a decode thread."""

    i: int
    x: torch.Tensor | bytes | None
    """float tensor (ready), uint8 tensor (fast path, to normalise), encoded JPEG bytes (to decode on the GPU), or None."""
    error: str | None = None
    times: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Seconds reading, decoding and transforming."""
    fallback: bool = False
    """A fast-path image that went through the exact (PIL) path."""


class _ImageDataset:
    """Reads, decodes and transforms image `i` of `rows`; failures come back as messages, not exceptions,
    so that the main process can raise a clean error naming the file. Safe to call from several threads."""

    def __init__(self, images: ImageSet, rows: np.ndarray, transform: Callable, plan: fastpath.Plan | None = None, device: str = "cpu"):
        self.images = images
        self.rows = rows
        self.transform = transform
        self.plan = plan
        self.gpu_decode = plan is not None and torch.device(device).type == "cuda"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> _Item:
        row = int(self.rows[i])
        path = self.images.paths[row]
        crop = self.images.crop(row)
        t0 = time.perf_counter()
        try:
            data = read_image_bytes(path)
            t1 = time.perf_counter()
            if self.plan is not None and fastpath.is_plain_jpeg(data):
                if self.gpu_decode:
                    return _Item(i, data, times=(t1 - t0, 0.0, 0.0))
                decoded = fastpath.decode([data], torch.device("cpu"))[0]
                t2 = time.perf_counter()
                if not isinstance(decoded, Exception):
                    x = fastpath.geometry(decoded, self.plan, crop)
                    return _Item(i, x, times=(t1 - t0, t2 - t1, time.perf_counter() - t2))
            return self.exact(i, data, t1 - t0)
        except DataError as err:
            return _Item(i, None, str(err))

    def exact(self, i: int, data: bytes, t_read: float = 0.0) -> _Item:
        """The backbone's own transform on PIL's decode of `data`."""
        path = self.images.paths[int(self.rows[i])]
        t1 = time.perf_counter()
        try:
            img = decode_rgb(data, path, self.images.crop(int(self.rows[i])))
            t2 = time.perf_counter()
            x = self.transform(img)
        except DataError as err:
            return _Item(i, None, str(err))
        except Exception as err:  # a transform that chokes on this image
            return _Item(i, None, f"Cannot preprocess image {path}: {type(err).__name__}: {err}")
        return _Item(i, x, times=(t_read, t2 - t1, time.perf_counter() - t2), fallback=self.plan is not None)


STAGES = ("read", "decode", "transform", "wait", "forward", "copy_out")
"""Per-stage seconds reported in `EmbedResult.timings`: read, decode and transform are summed over the decode
threads (they overlap the forward pass); wait is the main thread waiting for a batch; forward and copy-out
(features back to host memory) are the main thread's."""


def _collate(items: list[_Item], dataset: _ImageDataset, device: torch.device, timings: dict[str, float]):
    """(indices, batch on `device`, messages) of a batch of items: the images that decoded, and the errors of those that did not.

    Fast-path images arrive as uint8 (normalised here, batched, after the transfer: a quarter of the
    bytes) or, under CUDA, as JPEG bytes decoded here in one batched call on the GPU."""
    errors = [it.error for it in items if it.error is not None]
    for it in items:
        timings["read"] += it.times[0]
        timings["decode"] += it.times[1]
        timings["transform"] += it.times[2]
        timings["n_fallback"] += it.fallback
    raw = [it for it in items if isinstance(it.x, bytes)]
    if raw:
        t0 = time.perf_counter()
        decoded = fastpath.decode([it.x for it in raw], device)  # type: ignore[misc]
        _sync(device)
        t1 = time.perf_counter()
        for it, img in zip(raw, decoded, strict=True):
            if isinstance(img, Exception):
                done = dataset.exact(it.i, it.x)  # type: ignore[arg-type]
                it.x, it.error, it.fallback = done.x, done.error, True
                timings["n_fallback"] += 1
                if done.error is not None:
                    errors.append(done.error)
            else:
                assert dataset.plan is not None
                it.x = fastpath.geometry(img, dataset.plan, dataset.images.crop(int(dataset.rows[it.i])))
        _sync(device)
        timings["decode"] += t1 - t0
        timings["transform"] += time.perf_counter() - t1
    good = [it for it in items if isinstance(it.x, torch.Tensor)]
    if not good:
        return torch.zeros(0, dtype=torch.long), None, errors
    t0 = time.perf_counter()
    u8 = [k for k, it in enumerate(good) if it.x.dtype == torch.uint8]  # type: ignore[union-attr]
    if len(u8) == len(good):
        assert dataset.plan is not None
        x = fastpath.normalise(torch.stack([it.x for it in good]).to(device, non_blocking=True), dataset.plan)  # type: ignore[misc]
    elif u8:
        assert dataset.plan is not None
        ready = fastpath.normalise(torch.stack([good[k].x for k in u8]).to(device, non_blocking=True), dataset.plan)  # type: ignore[misc]
        x = torch.empty((len(good), *ready.shape[1:]), dtype=ready.dtype, device=device)
        x[u8] = ready
        rest = [k for k in range(len(good)) if k not in set(u8)]
        x[rest] = torch.stack([good[k].x for k in rest]).to(device)  # type: ignore[misc]
    else:
        x = torch.stack([it.x for it in good]).to(device, non_blocking=True)  # type: ignore[misc]
    timings["transform"] += time.perf_counter() - t0
    timings["n_fast"] += len(u8)
    return torch.tensor([it.i for it in good]), x, errors


def _threaded(fn: Callable[[int], _Item], n: int, batch_size: int, n_threads: int, prefetch: int = 2) -> Iterator[list[_Item]]:
    """Consecutive batches of `fn(0..n-1)`, computed by `n_threads` threads up to `prefetch` batches ahead (0: in this thread).

    Threads, not processes: PIL's decoder and resampler and torch's ops release the GIL, so threads
    scale with the cores while passing tensors by reference (no worker start-up, no shared-memory copy)."""
    starts = range(0, n, batch_size)
    if n_threads == 0:
        for s in starts:
            yield [fn(i) for i in range(s, min(n, s + batch_size))]
        return
    pool = concurrent.futures.ThreadPoolExecutor(n_threads, thread_name_prefix="biobench-decode")
    pending: collections.deque = collections.deque()
    todo = iter(starts)

    def submit() -> None:
        s = next(todo, None)
        if s is not None:
            pending.append([pool.submit(fn, i) for i in range(s, min(n, s + batch_size))])

    try:
        for _ in range(prefetch + 1):
            submit()
        while pending:
            batch = [f.result() for f in pending.popleft()]
            submit()
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def extract(
    backbone: VisionBackbone,
    images: ImageSet,
    rows: np.ndarray,
    settings: EmbedSettings,
    checkpoint: Callable[[np.ndarray, np.ndarray], None],
    *,
    timings: dict[str, float] | None = None,
    path: tuple[Decode, fastpath.Plan | None] | None = None,
) -> Float[np.ndarray, "n dim"]:
    """Run `backbone` over images `rows` of `images` (no cache lookup); returns one row per entry of `rows`.

    `checkpoint(rows_done, features_done)` is called every `settings.checkpoint_every`
    images and at the end, so callers can persist finished work as it accumulates.
    `timings`, if given, receives the seconds per stage (`STAGES`), the counts `n_fast` and
    `n_fallback`, and `wall`. `path`: `choose_path`'s answer, if the caller has it.
    """
    device = torch.device(settings.device)
    decode, plan = choose_path(backbone, settings) if path is None else path
    dataset = _ImageDataset(images, rows, backbone.make_img_transform(), plan, settings.device)
    times = {**dict.fromkeys(STAGES, 0.0), "n_fast": 0, "n_fallback": 0}
    start = time.perf_counter()
    # On CPU a full batch can take a minute: smaller forward passes keep progress moving (same throughput).
    micro = settings.batch_size if device.type == "cuda" else min(settings.batch_size, CPU_MICRO_BATCH)
    encoder = _BackoffEncoder(backbone, device, micro, times)
    out: np.ndarray | None = None
    embedded = np.zeros(len(rows), dtype=bool)  # rows with features
    flushed = np.zeros(len(rows), dtype=bool)  # rows already written to the cache
    errors: list[str] = []
    with Progress(len(rows), f"embed {images.name} with {backbone.name} ({decode})", "images") as bar:
        batches = _threaded(dataset.__getitem__, len(rows), settings.batch_size, settings.n_workers)
        while True:
            t0 = time.perf_counter()
            items = next(batches, None)
            times["wait"] += time.perf_counter() - t0
            if items is None:
                break
            idx, x, failed = _collate(items, dataset, device, times)
            # A bad image is noted and the rest go on: every feature computed is kept (and cached),
            # and one error at the end names every file to fix.
            errors += failed
            bar.update(len(failed))
            if x is None:
                continue
            feats = encoder(x, bar.update)
            if out is None:
                out = np.empty((len(rows), feats.shape[1]), dtype=np.float32)
            out[idx.numpy()] = feats
            embedded[idx.numpy()] = True
            pending = embedded & ~flushed
            if pending.sum() >= settings.checkpoint_every and not embedded.all():
                checkpoint(rows[pending], out[pending])
                flushed |= pending
    times["wall"] = time.perf_counter() - start
    if timings is not None:
        timings.update(times)
    n = max(1, len(rows))
    logger.info(
        "%s on %s (%s path, %d fast, %d fallback): %.0f img/s; per image: %s ms.",
        backbone.name,
        images.name,
        decode,
        times["n_fast"],
        times["n_fallback"],
        len(rows) / max(times["wall"], 1e-9),
        ", ".join(f"{k} {1000 * times[k] / n:.2f}" for k in STAGES),
    )
    pending = embedded & ~flushed
    if out is not None and pending.any():
        checkpoint(rows[pending], out[pending])
    if errors:
        shown = "\n  ".join(errors[:10])
        more = f"\n  (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        kept = (
            f" The features of the other {int(embedded.sum()):,} images are cached; a rerun embeds only what is missing."
            if embedded.any()
            else ""
        )
        raise DataError(
            f"{len(errors)} of {len(rows)} images of {images.name} could not be read:\n  {shown}{more}\nFix or remove these files (or their rows in the dataset's metadata).{kept}"
        )
    assert out is not None
    return out


class _BackoffEncoder:
    """Runs `img_encode` in micro-batches, halving their size whenever the device runs out of memory."""

    def __init__(self, backbone: VisionBackbone, device: torch.device, batch_size: int, timings: dict[str, float] | None = None):
        self.backbone = backbone
        self.timings = timings if timings is not None else {"forward": 0.0, "copy_out": 0.0}
        self.device = device
        self.micro = batch_size
        self.autocast = _autocast_dtype(device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, on_done: Callable[[int], None] = lambda n: None) -> np.ndarray:
        x = x.to(self.device, non_blocking=True)
        parts = []
        start = 0
        while start < len(x):
            size = min(self.micro, len(x) - start)
            try:
                parts.append(self._encode(x[start : start + size]))
                start += size
                on_done(size)
            except OutOfMemoryError:
                if size == 1:
                    raise
                self.micro = max(1, size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("Out of memory at batch size %d; continuing with %d.", size, self.micro)
        return np.concatenate(parts)

    def _encode(self, x: torch.Tensor) -> np.ndarray:
        t0 = time.perf_counter()
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                feats = self.backbone.img_encode(x).img_features
        else:
            feats = self.backbone.img_encode(x).img_features
        _sync(self.device)
        t1 = time.perf_counter()
        out = feats.float().cpu().numpy()
        self.timings["forward"] += t1 - t0
        self.timings["copy_out"] += time.perf_counter() - t1
        return out


def precision_label(device: torch.device) -> str:
    """How features are computed on `device`: 'fp32', or 'bf16-autocast' / 'fp16-autocast' on CUDA."""
    dtype = _autocast_dtype(device)
    return (
        "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16').replace('float16', 'fp16')}-autocast"
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
