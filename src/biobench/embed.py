"""The one feature-extraction path every task uses: images -> batches -> backbone -> cached vectors.

`get_features` looks every image up in the `FeatureCache` first and runs the backbone
only on the misses, so a second request for the same images (another n_train, another
seed, another task over the same files) performs zero forward passes. Extraction runs
under `torch.inference_mode`, with bf16/fp16 autocast on CUDA, a DataLoader with worker
processes, and halves the batch when the accelerator runs out of memory. Partial results
are checkpointed into the cache, so a crash or Ctrl-C loses little.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import signal
import time
from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Float

from biobench.backbones.base import VisionBackbone, fingerprint
from biobench.cache import FeatureCache
from biobench.errors import DataError
from biobench.images import ImageSet, KeyMode, load_rgb
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


CPU_MICRO_BATCH = 32
"""Images per forward pass on CPU (progress is reported per pass)."""


def cache_key(backbone: VisionBackbone, device: str) -> str:
    """The cache's key for `backbone` run on `device`: its fingerprint plus the numeric precision,
    since autocast changes the numbers and features of different precisions must never mix.

    Recomputed on every request (about a second per GB of weights), never memoised on the
    instance: a user evaluating the same object after more training must not get the old
    features back."""
    return _cache_key(fingerprint(backbone), device)


def _cache_key(backbone_fingerprint: str, device: str) -> str:
    return _digest(backbone_fingerprint, precision_label(torch.device(device)))


def get_features(backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings = EmbedSettings()) -> EmbedResult:
    """Features for every image in `images`, from the cache where possible."""
    start = time.perf_counter()
    keys = images.keys(settings.key_mode)
    set_fp = images.fingerprint(keys)
    backbone_fp = fingerprint(backbone)
    fp = _cache_key(backbone_fp, settings.device)
    cached, found = cache.lookup(fp, keys)
    missing = np.flatnonzero(~found)
    if len(missing) == 0:
        assert cached is not None or len(images) == 0
        feats = cached if cached is not None else np.zeros((0, 0), dtype=np.float32)
        logger.info("%s on %s: all %d images cached.", backbone.name, images.name, len(images))
        return EmbedResult(feats, len(images), 0, time.perf_counter() - start, set_fp, backbone_fp)

    logger.info("%s on %s: %d images cached, embedding %d.", backbone.name, images.name, len(images) - len(missing), len(missing))

    checkpoint = _cache_writer(backbone, images, cache, settings, fp, keys, set_fp)
    new = extract(backbone, images, missing, settings, checkpoint)
    if cached is None:
        out = np.empty((len(images), new.shape[1]), dtype=np.float32)
    else:
        out = np.array(cached, dtype=np.float32)  # copy: the lookup may be a read-only map
    out[missing] = new
    return EmbedResult(out, len(images) - len(missing), len(missing), time.perf_counter() - start, set_fp, backbone_fp)


def _cache_writer(
    backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings, fp: str, keys: np.ndarray, set_fp: str
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
                extra={"image_set_fingerprint": set_fp, "key_mode": settings.key_mode},
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
    fp = _cache_key(fingerprint(backbone), settings.device)
    rows = shard_rows(len(images), shard, n_shards)
    _, found = cache.lookup(fp, keys[rows])
    todo = rows[~found]
    if len(todo):
        logger.info("%s on %s, shard %d/%d: embedding %d images.", backbone.name, images.name, shard + 1, n_shards, len(todo))
        extract(backbone, images, todo, settings, _cache_writer(backbone, images, cache, settings, fp, keys, images.fingerprint(keys)))
    return len(todo)


def missing_shards(backbone: VisionBackbone, images: ImageSet, cache: FeatureCache, settings: EmbedSettings, n_shards: int) -> list[int]:
    """The shards whose images are not all in the cache (valid chunks only); [] = the feature set is complete."""
    keys = images.keys(settings.key_mode)
    _, found = cache.lookup(_cache_key(fingerprint(backbone), settings.device), keys)
    return [i for i in range(n_shards) if not found[shard_rows(len(images), i, n_shards)].all()]


class _ImageDataset(torch.utils.data.Dataset):
    """Decodes and transforms images; failures come back as messages, not exceptions,
    so that the main process can raise a clean error naming the file."""

    def __init__(self, images: ImageSet, rows: np.ndarray, transform: Callable):
        self.images = images
        self.rows = rows
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        path = self.images.paths[row]
        try:
            return i, self.transform(load_rgb(path, self.images.crop(row))), None
        except DataError as err:
            return i, None, str(err)
        except Exception as err:  # a transform that chokes on this image
            return i, None, f"Cannot preprocess image {path}: {type(err).__name__}: {err}"


def _collate(batch):
    """(indices, images) of the images that decoded, plus the messages of those that did not."""
    errors = [err for _, _, err in batch if err is not None]
    good = [(i, x) for i, x, err in batch if err is None]
    if not good:
        return torch.zeros(0, dtype=torch.long), None, errors
    return torch.tensor([i for i, _ in good]), torch.stack([x for _, x in good]), errors


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C is the main process's to handle; workers just die with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def extract(
    backbone: VisionBackbone,
    images: ImageSet,
    rows: np.ndarray,
    settings: EmbedSettings,
    checkpoint: Callable[[np.ndarray, np.ndarray], None],
) -> Float[np.ndarray, "n dim"]:
    """Run `backbone` over images `rows` of `images` (no cache lookup); returns one row per entry of `rows`.

    `checkpoint(rows_done, features_done)` is called every `settings.checkpoint_every`
    images and at the end, so callers can persist finished work as it accumulates.
    """
    device = torch.device(settings.device)
    dataset = _ImageDataset(images, rows, backbone.make_img_transform())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.n_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=_ignore_sigint if settings.n_workers > 0 else None,
    )
    # On CPU a full batch can take a minute: smaller forward passes keep progress moving (same throughput).
    micro = settings.batch_size if device.type == "cuda" else min(settings.batch_size, CPU_MICRO_BATCH)
    encoder = _BackoffEncoder(backbone, device, micro)
    out: np.ndarray | None = None
    embedded = np.zeros(len(rows), dtype=bool)  # rows with features
    flushed = np.zeros(len(rows), dtype=bool)  # rows already written to the cache
    errors: list[str] = []
    with Progress(len(rows), f"embed {images.name} with {backbone.name}", "images") as bar:
        for idx, x, failed in loader:
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

    def __init__(self, backbone: VisionBackbone, device: torch.device, batch_size: int):
        self.backbone = backbone
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
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                feats = self.backbone.img_encode(x).img_features
        else:
            feats = self.backbone.img_encode(x).img_features
        return feats.float().cpu().numpy()


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
