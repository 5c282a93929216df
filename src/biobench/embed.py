"""The one feature-extraction path every task uses: images -> batches -> backbone -> cached vectors.

`get_features` looks every image up in the `FeatureCache` first and runs the backbone
only on the misses, so a second request for the same images (another n_train, another
seed, another task over the same files) performs zero forward passes. Extraction runs
under `torch.inference_mode`, with bf16/fp16 autocast on CUDA, channels-last for conv nets
on CUDA and `torch.compile` if asked. `batch_size = "auto"` takes the largest batch that
fits: under CUDA it starts at `AUTO_BATCH_MAX` and halves on out-of-memory, retrying the
same images, and the size it settles on is remembered for the process and recorded.
Partial results are checkpointed into the cache, so a crash or Ctrl-C loses little.

Images are read, decoded and transformed by `n_workers` threads (one per core by default),
a couple of batches ahead of the forward pass, along one of two paths (`EmbedSettings.decode`,
part of the cache key): `exact`, the backbone's own PIL transform (its tensor conversion and
normalisation batched, bit for bit the same), and `fast`, tensor JPEG decoding and the same
transform replayed as tensor ops (`biobench.fastpath`; batched on the GPU under CUDA), with
the exact path per image for anything else. A staging thread collates the next batch and
moves it to the device (pinned memory, non-blocking, on its own CUDA stream) while the
forward pass runs, and features come back to the host asynchronously. Per-stage seconds come
back in `EmbedResult.timings`, and how the backbone ran in `EmbedResult.extraction`."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float

from biobench import fastpath
from biobench.backbones.base import VisionBackbone, fingerprint
from biobench.cache import FeatureCache
from biobench.config import default_decode_threads
from biobench.errors import BackboneError, DataError
from biobench.images import ImageSet, KeyMode, decode_rgb, read_image_bytes
from biobench.progress import Progress

logger = logging.getLogger(__name__)

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclasses.dataclass(frozen=True)
class EmbedSettings:
    """How to run extraction."""

    device: str = "cpu"
    """torch device: cpu, cuda, cuda:1, mps."""
    batch_size: int | Literal["auto"] = "auto"
    """Images per forward pass: "auto" = the largest that fits (under CUDA from `AUTO_BATCH_MAX` down, halving on
    out-of-memory; `CPU_MICRO_BATCH` elsewhere), or a number (also halved on out-of-memory)."""
    n_workers: int = dataclasses.field(default_factory=default_decode_threads)
    """Threads reading, decoding and transforming images ahead of the forward pass; 0 decodes in the main thread."""
    key_mode: KeyMode = "stat"
    """How images are identified in the cache: 'stat' (path, size, mtime) or 'content' (hash of bytes)."""
    checkpoint_every: int = 20_000
    """Write finished features to the cache every this many images, so a crash loses little."""
    decode: Decode | None = None
    """Preprocessing path: 'exact' (the backbone's own PIL transform), 'fast' (tensor JPEG decode and transform,
    on the GPU under CUDA; `biobench.fastpath`); None = fast on CUDA, exact elsewhere. Part of the cache key."""
    channels_last: bool | None = None
    """Backbone and batches in channels-last memory format; None = on under CUDA for convolutional networks
    (`resolve_channels_last`). Not part of the cache key: it changes only the order of float operations."""
    compile: bool = False
    """Run the backbone's image encoder through `torch.compile` (`COMPILE_BACKEND`). Not part of the cache key:
    it changes only the order of float operations."""


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
    """Seconds per stage of the extraction (`STAGES`), plus n_fast, n_fallback, n_oom, the final batch_size and wall;
    empty when all were cached."""
    extraction: dict[str, object] = dataclasses.field(default_factory=dict)
    """How the embedded images' features were computed (`Extraction`: device, precision, batch size, channels-last,
    compile); empty when all were cached."""


CPU_MICRO_BATCH = 32
"""Images per forward pass on CPU (progress is reported per pass); also what batch_size = "auto" means there."""

AUTO_BATCH_MAX = 1024
"""Under CUDA, batch_size = "auto" starts at this many images per forward pass and halves on out-of-memory until a
batch fits. Beyond it a ViT-B/16 at 224 px gains nothing measurable, and a bigger loader batch only delays the first one."""

CPU_LOADER_BATCH = 256
"""Images per loader batch (decoded together, then run in micro-batches) off CUDA when batch_size = "auto"."""


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

    how = extraction_options(backbone, settings)
    checkpoint = _cache_writer(backbone, images, cache, settings, fp, keys, set_fp, decode, how)
    timings: dict[str, float] = {}
    new = extract(backbone, images, missing, settings, checkpoint, timings=timings, path=path)
    if cached is None:
        out = np.empty((len(images), new.shape[1]), dtype=np.float32)
    else:
        out = np.array(cached, dtype=np.float32)  # copy: the lookup may be a read-only map
    out[missing] = new
    how["batch_size"] = int(timings["batch_size"])
    return EmbedResult(
        out, len(images) - len(missing), len(missing), time.perf_counter() - start, set_fp, backbone_fp, decode, timings, how
    )


def _cache_writer(
    backbone: VisionBackbone,
    images: ImageSet,
    cache: FeatureCache,
    settings: EmbedSettings,
    fp: str,
    keys: np.ndarray,
    set_fp: str,
    decode: str = "exact",
    how: dict[str, object] | None = None,
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
                extra={"image_set_fingerprint": set_fp, "key_mode": settings.key_mode, "decode": decode, **(how or {})},
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
        writer = _cache_writer(
            backbone, images, cache, settings, fp, keys, images.fingerprint(keys), path[0], extraction_options(backbone, settings)
        )
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


def resolve_channels_last(setting: bool | None, backbone: VisionBackbone, device: torch.device) -> bool:
    """Whether to run channels-last: the setting if given; else on under CUDA for convolutional networks (more than one
    `Conv2d`: a ViT's only convolution is its patch embedding, where the layout makes no difference)."""
    if setting is not None:
        return bool(setting)
    return device.type == "cuda" and sum(isinstance(m, torch.nn.Conv2d) for m in backbone.modules()) > 1


def batch_sizes(batch_size: int | Literal["auto"], device: torch.device) -> tuple[int, int]:
    """(images per loader batch, images per forward pass to start with) for a batch_size setting on `device`.

    Off CUDA a forward pass is at most `CPU_MICRO_BATCH` images (a full batch can take a minute there, and smaller
    passes keep progress moving at the same throughput)."""
    if batch_size == "auto":
        return (AUTO_BATCH_MAX, AUTO_BATCH_MAX) if device.type == "cuda" else (CPU_LOADER_BATCH, CPU_MICRO_BATCH)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}.")
    return batch_size, batch_size if device.type == "cuda" else min(batch_size, CPU_MICRO_BATCH)


def extraction_options(backbone: VisionBackbone, settings: EmbedSettings) -> dict[str, object]:
    """What a result and a cache chunk record about how features were computed (the batch size is added once known)."""
    device = torch.device(settings.device)
    return {
        "device": str(device),
        "precision": precision_label(device),
        "batch_size_setting": settings.batch_size,
        "channels_last": resolve_channels_last(settings.channels_last, backbone, device),
        "compile": bool(settings.compile),
    }


@dataclasses.dataclass
class _Item:
    """One image's preprocessing result, from a decode thread."""

    i: int
    x: torch.Tensor | bytes | None
    """float tensor (ready), uint8 tensor (to normalise, batched), encoded JPEG bytes (to decode on the GPU), or None."""
    error: str | None = None
    times: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Seconds reading, decoding and transforming."""
    fallback: bool = False
    """A fast-path image that went through the exact (PIL) path."""


class _ImageDataset:
    """Reads, decodes and transforms image `i` of `rows`; failures come back as messages, not exceptions,
    so that the main process can raise a clean error naming the file. Safe to call from several threads.

    Whenever the transform splits into PIL steps and a tensor conversion plus `Normalize` (`fastpath.split`), the
    exact path runs only the PIL steps per image and hands over uint8; `/255` and the normalisation then run once per
    batch (`norm`), with the same float32 operations, so the numbers are those of the whole transform, bit for bit."""

    def __init__(self, images: ImageSet, rows: np.ndarray, transform: Callable, plan: fastpath.Plan | None = None, device: str = "cpu"):
        self.images = images
        self.rows = rows
        self.transform = transform
        self.plan = plan
        self.gpu_decode = plan is not None and torch.device(device).type == "cuda"
        split = fastpath.split(transform)
        self.pil_steps = split[0] if split is not None else None
        self.norm = plan if plan is not None else (split[1] if split is not None else None)
        """The normalisation of uint8 items (the fast path's plan, or the exact path's split)."""

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
        """The backbone's own transform on PIL's decode of `data` (its PIL steps only, when it splits)."""
        path = self.images.paths[int(self.rows[i])]
        t1 = time.perf_counter()
        try:
            img = decode_rgb(data, path, self.images.crop(int(self.rows[i])))
            t2 = time.perf_counter()
            x = fastpath.to_uint8(self.pil_steps(img)) if self.pil_steps is not None else self.transform(img)
        except DataError as err:
            return _Item(i, None, str(err))
        except Exception as err:  # a transform that chokes on this image
            return _Item(i, None, f"Cannot preprocess image {path}: {type(err).__name__}: {err}")
        return _Item(i, x, times=(t_read, t2 - t1, time.perf_counter() - t2), fallback=self.plan is not None)


GPU_DECODE_CHUNK = 256
"""JPEGs decoded (and resized) per batched GPU call: bounds the staging thread's GPU memory whatever the batch size
(256 photographs of 500x375 take about 0.6 GB as float during the resize)."""

STAGES = ("read", "decode", "transform", "wait", "forward", "copy_out")
"""Per-stage seconds reported in `EmbedResult.timings`: read, decode and transform are summed over the decode threads
and the staging thread (they overlap the forward pass); wait is the main thread waiting for a batch (starvation);
forward is the main thread's time launching the backbone and waiting for its results (under CUDA this includes the
asynchronous copy of features to pinned host memory); copy_out is moving them into the result array."""


def _collate(items: list[_Item], dataset: _ImageDataset, device: torch.device, timings: dict[str, float]):
    """(indices, batch on `device`, messages) of a batch of items: the images that decoded, and the errors of those that did not.

    Runs in the staging thread (on its own CUDA stream). uint8 items are normalised here, batched, after the transfer
    (a quarter of the bytes); under CUDA, JPEG bytes are decoded here in one batched call on the GPU and images of one
    shape are resized together, and CPU tensors travel through one pinned buffer with a non-blocking copy."""
    errors = [it.error for it in items if it.error is not None]
    for it in items:
        timings["read"] += it.times[0]
        timings["decode"] += it.times[1]
        timings["transform"] += it.times[2]
        timings["n_fallback"] += it.fallback
    raw = [it for it in items if isinstance(it.x, bytes)]
    for chunk in range(0, len(raw), GPU_DECODE_CHUNK):
        _gpu_decode(raw[chunk : chunk + GPU_DECODE_CHUNK], dataset, device, timings, errors)
    good = [it for it in items if isinstance(it.x, torch.Tensor)]
    if not good:
        return torch.zeros(0, dtype=torch.long), None, errors
    t0 = time.perf_counter()
    tensors: list[torch.Tensor] = [it.x for it in good]  # type: ignore[misc]
    u8 = [k for k, t in enumerate(tensors) if t.dtype == torch.uint8]
    if len(u8) == len(good):
        assert dataset.norm is not None
        x = fastpath.normalise(_to_batch(tensors, device), dataset.norm)
    elif u8:
        assert dataset.norm is not None
        ready = fastpath.normalise(_to_batch([tensors[k] for k in u8], device), dataset.norm)
        x = torch.empty((len(good), *ready.shape[1:]), dtype=ready.dtype, device=device)
        x[u8] = ready
        rest = [k for k in range(len(good)) if k not in set(u8)]
        x[rest] = _to_batch([tensors[k] for k in rest], device)
    else:
        x = _to_batch(tensors, device)
    _sync_stream(device)
    timings["transform"] += time.perf_counter() - t0
    if dataset.plan is not None:
        timings["n_fast"] += len(good) - sum(it.fallback for it in good)
    return torch.tensor([it.i for it in good]), x, errors


def _gpu_decode(raw: list[_Item], dataset: _ImageDataset, device: torch.device, timings: dict[str, float], errors: list[str]) -> None:
    """Decode the JPEG bytes of `raw` in one batched call on the GPU, then crop / resize them in shape groups, in place;
    an image the decoder rejects goes through the exact path instead (its error, if that fails too, joins `errors`)."""
    t0 = time.perf_counter()
    decoded = fastpath.decode([it.x for it in raw], device)  # type: ignore[misc]
    _sync_stream(device)
    t1 = time.perf_counter()
    ok = []
    for it, img in zip(raw, decoded, strict=True):
        if isinstance(img, Exception):
            done = dataset.exact(it.i, it.x)  # type: ignore[arg-type]
            it.x, it.error, it.fallback = done.x, done.error, True
            timings["n_fallback"] += 1
            if done.error is not None:
                errors.append(done.error)
        else:
            ok.append((it, img))
    if ok:
        assert dataset.plan is not None
        crops = [dataset.images.crop(int(dataset.rows[it.i])) for it, _ in ok]
        for (it, _), x in zip(ok, fastpath.geometry_many([img for _, img in ok], dataset.plan, crops), strict=True):
            it.x = x
    _sync_stream(device)
    timings["decode"] += t1 - t0
    timings["transform"] += time.perf_counter() - t1


def _to_batch(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """`tensors` (each on the CPU or on `device`, one shape) stacked into one batch on `device`: the CPU ones stacked
    straight into a pinned buffer (under CUDA) and copied without blocking, the others stacked where they are."""
    if device.type == "cpu":
        return torch.stack(tensors)
    on_cpu = [k for k, t in enumerate(tensors) if t.device.type == "cpu"]
    if len(on_cpu) == len(tensors):
        return _stack_host(tensors, pin=device.type == "cuda").to(device, non_blocking=True)
    if not on_cpu:
        return torch.stack(tensors)
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, device=device)
    out[on_cpu] = _stack_host([tensors[k] for k in on_cpu], pin=device.type == "cuda").to(device, non_blocking=True)
    rest = [k for k in range(len(tensors)) if k not in set(on_cpu)]
    out[rest] = torch.stack([tensors[k] for k in rest])
    return out


def _stack_host(tensors: list[torch.Tensor], pin: bool) -> torch.Tensor:
    """One stack of CPU tensors, written straight into page-locked memory when `pin` (no second copy to pin it)."""
    if not pin:
        return torch.stack(tensors)
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
    return torch.stack(tensors, out=out)


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


STAGE_THREAD_ON_CPU = False
"""Whether extraction on CPU collates in the staging thread too. Off: there the forward pass already uses every core
and the collation is a small share of the work, so a third kind of thread only competes (tests turn it on)."""


def _staged(
    batches: Iterator[list[_Item]], stage: Callable[[list[_Item]], tuple], device: torch.device, depth: int = 1, threaded: bool = True
) -> Iterator[tuple]:
    """`stage(batch)` for each batch, computed in one background thread up to `depth` batches ahead of the consumer
    (in the consumer's thread when not `threaded`).

    Under CUDA the thread works on a stream of its own, so GPU decoding, resizing, normalising and the
    host-to-device copy of batch k+1 overlap the forward pass of batch k on the default stream; each result is
    complete (its stream synchronised) before it is handed over. Exceptions in the thread are re-raised here."""
    if not threaded:
        for batch in batches:
            yield stage(batch)
        return
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(message: tuple) -> bool:
        while not stop.is_set():
            try:
                results.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for batch in batches:
                    out = stage(batch)
                    if stream is not None:
                        stream.synchronize()
                    if not put(("batch", out)):
                        return
            put(("end", None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            put(("error", err))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="biobench-stage", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def _sync_stream(device: torch.device) -> None:
    """Wait for this thread's current CUDA stream (not the whole device: the other thread's stream keeps running)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


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
    `timings`, if given, receives the seconds per stage (`STAGES`), the counts `n_fast`,
    `n_fallback` and `n_oom`, the final `batch_size` and `wall`. `path`: `choose_path`'s answer, if the caller has it.

    Four stages overlap: decode threads read (and on CPU decode and transform) images two loader batches
    ahead; one staging thread collates, normalises and moves the next batch to the device (on its own CUDA
    stream); the main thread launches the forward pass, and collects each batch's features only after
    launching the next one, so the GPU never waits for Python between batches.
    """
    device = torch.device(settings.device)
    decode, plan = choose_path(backbone, settings) if path is None else path
    dataset = _ImageDataset(images, rows, backbone.make_img_transform(), plan, settings.device)
    times: dict[str, float] = {**dict.fromkeys(STAGES, 0.0), "n_fast": 0, "n_fallback": 0, "n_oom": 0}
    start = time.perf_counter()
    loader_batch, micro = batch_sizes(settings.batch_size, device)
    channels_last = resolve_channels_last(settings.channels_last, backbone, device)
    encoder = _BackoffEncoder(backbone, device, micro, times, channels_last=channels_last, compile=settings.compile)
    out: np.ndarray | None = None
    embedded = np.zeros(len(rows), dtype=bool)  # rows with features
    flushed = np.zeros(len(rows), dtype=bool)  # rows already written to the cache
    errors: list[str] = []
    label = f"embed {images.name} with {backbone.name} ({decode}, batch {settings.batch_size})"

    with Progress(len(rows), label, "images") as bar:

        def collect(done: tuple[torch.Tensor, _Pending]) -> None:
            nonlocal out
            idx, pending = done
            feats = encoder.finish(pending, bar.update)
            t0 = time.perf_counter()
            if out is None:
                out = np.empty((len(rows), feats.shape[1]), dtype=np.float32)
            out[idx.numpy()] = feats
            times["copy_out"] += time.perf_counter() - t0
            embedded[idx.numpy()] = True
            pending_rows = embedded & ~flushed
            if pending_rows.sum() >= settings.checkpoint_every and not embedded.all():
                checkpoint(rows[pending_rows], out[pending_rows])
                flushed[pending_rows] = True

        batches = _threaded(dataset.__getitem__, len(rows), loader_batch, settings.n_workers)
        staged = _staged(
            batches, lambda items: _collate(items, dataset, device, times), device, threaded=device.type != "cpu" or STAGE_THREAD_ON_CPU
        )
        in_flight: tuple[torch.Tensor, _Pending] | None = None
        with contextlib.closing(staged):
            while True:
                t0 = time.perf_counter()
                got = next(staged, None)
                times["wait"] += time.perf_counter() - t0
                if got is None:
                    break
                idx, x, failed = got
                # A bad image is noted and the rest go on: every feature computed is kept (and cached),
                # and one error at the end names every file to fix.
                errors += failed
                bar.update(len(failed))
                if x is None:
                    continue
                if x.device.type == "cuda":
                    x.record_stream(torch.cuda.current_stream(x.device))  # made on the staging stream, used on this one
                try:
                    launched = (idx, encoder.submit(x))
                except BaseException:  # Ctrl-C, out of memory for a single image: keep (and checkpoint) what was computed
                    if in_flight is not None:
                        with contextlib.suppress(Exception):
                            collect(in_flight)
                    raise
                if in_flight is not None:
                    collect(in_flight)
                in_flight = launched
            if in_flight is not None:
                collect(in_flight)
    times["wall"] = time.perf_counter() - start
    times["batch_size"] = encoder.micro
    if timings is not None:
        timings.update(times)
    n = max(1, len(rows))
    logger.info(
        "%s on %s (%s path, %d fast, %d fallback, batch size %d%s%s, %s): %.0f img/s; per image: %s ms.",
        backbone.name,
        images.name,
        decode,
        times["n_fast"],
        times["n_fallback"],
        encoder.micro,
        f" after {times['n_oom']} out-of-memory back-offs" if times["n_oom"] else "",
        ", channels-last" if channels_last else "",
        precision_label(device) + (", compiled" if settings.compile else ""),
        len(rows) / max(times["wall"], 1e-9),
        ", ".join(f"{k} {1000 * times[k] / n:.2f}" for k in STAGES),
    )
    pending_rows = embedded & ~flushed
    if out is not None and pending_rows.any():
        checkpoint(rows[pending_rows], out[pending_rows])
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


_LEARNED_BATCH: dict[tuple, int] = {}
"""Micro-batch sizes that out-of-memory back-off settled on, per (backbone name, device, precision, channels-last,
compile): later extractions in this process start there instead of running out of memory again."""

COMPILE_BACKEND = "inductor"
"""`torch.compile` backend when compile = true (tests use "eager", which traces without generating code)."""

_COMPILED: dict[str, Callable] = {}


def _features(backbone: VisionBackbone, x: torch.Tensor) -> torch.Tensor:
    return backbone.img_encode(x).img_features


def _compiled_features(backend: str) -> Callable:
    """`_features` through `torch.compile`, one wrapper per backend for the process: torch's own guards then reuse
    compiled code for the same backbone (and shapes) across extractions, and recompile for another."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_features, backend=backend, dynamic=False)
    return _COMPILED[backend]


def forget_batch_sizes() -> None:
    """Drop the batch sizes learned from out-of-memory back-off (tests; after freeing GPU memory)."""
    _LEARNED_BATCH.clear()


_Pending = list
"""A submitted batch's features in micro-batches: numpy arrays (CPU), or (pinned host tensor, CUDA event, n) triples."""


class _BackoffEncoder:
    """Runs `img_encode` in micro-batches under `torch.inference_mode` (no_grad when compiled), with bf16/fp16
    autocast on CUDA, channels-last and `torch.compile` if asked, halving the micro-batch whenever the device runs out
    of memory and retrying the same images (none lost, none twice); the size it settles on is remembered.

    `submit` launches a batch and returns at once under CUDA (features are copied to pinned host memory without
    blocking); `finish` waits for them. Out-of-memory surfaces in `submit`: the caching allocator raises it when an
    allocation fails, before any kernel is queued with it."""

    def __init__(
        self,
        backbone: VisionBackbone,
        device: torch.device,
        batch_size: int,
        timings: dict[str, float] | None = None,
        *,
        channels_last: bool = False,
        compile: bool = False,
    ):
        self.backbone = backbone
        self.timings = timings if timings is not None else {}
        for key in ("forward", "copy_out", "n_oom"):
            self.timings.setdefault(key, 0)
        self.device = device
        self.autocast = _autocast_dtype(device)
        self.channels_last = channels_last
        self.compile = compile
        self.key = (backbone.name, str(device), precision_label(device), channels_last, compile)
        self.micro = min(batch_size, _LEARNED_BATCH.get(self.key, batch_size))
        if channels_last:
            backbone.to(memory_format=torch.channels_last)  # 4-d weights only; values (and the fingerprint) unchanged
        self.fn = _compiled_features(COMPILE_BACKEND) if compile else _features

    def __call__(self, x: torch.Tensor, on_done: Callable[[int], None] = lambda n: None) -> np.ndarray:
        return self.finish(self.submit(x), on_done)

    def submit(self, x: torch.Tensor) -> _Pending:
        with torch.no_grad() if self.compile else torch.inference_mode():
            return self._submit(x)

    def _submit(self, x: torch.Tensor) -> _Pending:
        t0 = time.perf_counter()
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        parts: _Pending = []
        start = 0
        while start < len(x):
            size = min(self.micro, len(x) - start)
            oom = False
            try:
                parts.append(self._launch(x[start : start + size]))
            except OutOfMemoryError:
                oom = True
            if not oom:
                start += size
                continue
            # Outside the except block: the exception, and the tensors its traceback holds, are gone before emptying the cache.
            self.timings["n_oom"] += 1
            if size == 1:
                raise BackboneError(
                    f"{self.backbone.name} runs out of memory on {self.device} even for a single image. Free the device "
                    '(other processes on it?), use a smaller model, or set device = "cpu".'
                )
            self.micro = max(1, size // 2)
            _LEARNED_BATCH[self.key] = self.micro
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            logger.warning("Out of memory at batch size %d; continuing with %d.", size, self.micro)
        self.timings["forward"] += time.perf_counter() - t0
        return parts

    def _launch(self, x: torch.Tensor):
        n = len(x)
        if self.compile and n < self.micro:
            # One input shape per micro-batch size: a short last batch is padded rather than compiled anew.
            x = torch.cat([x, x.new_zeros((self.micro - n, *x.shape[1:]))])
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                feats = self.fn(self.backbone, x)
        else:
            feats = self.fn(self.backbone, x)
        feats = feats[:n].float()
        if self.device.type != "cuda":
            return feats.cpu().numpy()
        host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(feats, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return host, event, n

    def finish(self, parts: _Pending, on_done: Callable[[int], None] = lambda n: None) -> np.ndarray:
        """The features of a submitted batch, waiting for the device where needed."""
        t0 = time.perf_counter()
        arrays = []
        for part in parts:
            if isinstance(part, np.ndarray):
                arrays.append(part)
                on_done(len(part))
            else:
                host, event, n = part
                event.synchronize()
                arrays.append(host.numpy())
                on_done(n)
        self.timings["forward"] += time.perf_counter() - t0
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


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
