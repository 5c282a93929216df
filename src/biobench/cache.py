"""On-disk feature cache: each image is embedded once per backbone, whatever task, n_train or seed asks.

Layout under the cache root (default `~/.cache/biobench`, env `BIOBENCH_CACHE`):

```
v1/<backbone fingerprint[:32]>/
    backbone.json                 # org, ckpt, full fingerprint, feature dim
    chunk-<time>-<uuid>/          # one per embedding pass (or checkpoint within one)
        features.npy              # float32 (n, dim), memory-mapped on read
        keys.npy                  # S32 per-image keys (see biobench.images.image_key)
        meta.json                 # dataset label, n, dim, image-set fingerprint, created
```

Chunks are written to a `tmp-*` directory and renamed into place, so a reader never
sees half a chunk and a crash loses at most the images since the last checkpoint.
Every chunk is checked when it is opened (its files' sizes and shapes, and a checksum of
its keys; `biobench cache verify` also checks the features' checksum): a damaged one
(a truncated copy, a disk error) is renamed `damaged-*` with a warning, and its images are
embedded again.
Lookups gather rows from every chunk of the backbone by key, so overlapping image sets
(a filtered NeWT, a second task over the same files) reuse what is already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from jaxtyping import Float

from biobench import atomic

logger = logging.getLogger(__name__)

LAYOUT_VERSION = "v1"


def default_cache_dir() -> Path:
    """`$BIOBENCH_CACHE`, else `~/.cache/biobench`."""
    env = os.environ.get("BIOBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "biobench"


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """What `biobench cache ls` shows: one (backbone, dataset) pair."""

    model: str
    dataset: str
    n_images: int
    dim: int
    bytes: int
    path: Path
    damaged: int = 0
    """Chunks found damaged (moved aside as `damaged-*`; `biobench cache rm` deletes them)."""


class FeatureCache:
    """Memory-mapped per-backbone feature store keyed by per-image keys."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @property
    def base(self) -> Path:
        return self.root / LAYOUT_VERSION

    def backbone_dir(self, fingerprint: str) -> Path:
        return self.base / fingerprint[:32]

    # Reading

    def _chunks(self, fingerprint: str) -> list[Path]:
        d = self.backbone_dir(fingerprint)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("chunk-"))

    def _open_chunk(self, chunk: Path, *, full: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(keys, read-only features map) of a chunk, or `DamagedChunk` saying what is wrong."""
        meta = _read_json(chunk / "meta.json")
        if not meta:
            raise DamagedChunk(chunk, "meta.json is missing or unreadable")
        try:
            ck = np.load(chunk / "keys.npy")
            feats = np.load(chunk / "features.npy", mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            raise DamagedChunk(chunk, f"{type(err).__name__}: {err}") from None
        n, dim = meta.get("n"), meta.get("dim")
        if ck.ndim != 1 or len(ck) != n or feats.ndim != 2 or feats.shape != (n, dim):
            raise DamagedChunk(chunk, f"keys {ck.shape} / features {feats.shape} do not match meta.json's n={n}, dim={dim}")
        if "keys_blake2b" in meta and _digest(ck) != meta["keys_blake2b"]:
            raise DamagedChunk(chunk, "keys.npy does not match its checksum")
        if full and "features_blake2b" in meta and _digest(feats) != meta["features_blake2b"]:
            raise DamagedChunk(chunk, "features.npy does not match its checksum")
        return ck, feats

    def _quarantine(self, damaged: DamagedChunk) -> None:
        """Move a damaged chunk aside (kept for inspection; `cache rm` deletes it) so it is never read again."""
        chunk = damaged.chunk
        try:
            os.rename(chunk, chunk.with_name("damaged-" + chunk.name.removeprefix("chunk-")))
            where = "renamed damaged-*"
        except OSError as err:
            where = f"could not be moved aside ({err}); it is skipped"
        logger.warning("Feature cache chunk %s is damaged (%s): %s; its images will be embedded again.", chunk, damaged.reason, where)

    def _good_chunks(self, fingerprint: str) -> list[tuple[Path, np.ndarray, np.ndarray]]:
        out = []
        for c in self._chunks(fingerprint):
            try:
                out.append((c, *self._open_chunk(c)))
            except DamagedChunk as damaged:
                self._quarantine(damaged)
        return out

    def lookup(self, fingerprint: str, keys: np.ndarray) -> tuple[Float[np.ndarray, "n dim"] | None, np.ndarray]:
        """Features for `keys` where cached.

        Returns `(features, found)`: `found` is a bool mask; `features` has a row per key
        (rows where `found` is False are zero) or is None when nothing was found. When one
        chunk holds exactly these keys in this order, `features` is its read-only memory map.
        """
        found = np.zeros(len(keys), dtype=bool)
        good = self._good_chunks(fingerprint) if len(keys) else []
        if not good:
            return None, found
        chunk_keys = [ck for _, ck, _ in good]
        for _, ck, feats in good:
            if len(ck) == len(keys) and np.array_equal(ck, keys):
                return feats, np.ones(len(keys), dtype=bool)

        all_keys = np.concatenate(chunk_keys)
        owner = np.concatenate([np.full(len(ck), i) for i, ck in enumerate(chunk_keys)])
        row = np.concatenate([np.arange(len(ck)) for ck in chunk_keys])
        order = np.argsort(all_keys, kind="stable")
        sorted_keys = all_keys[order]
        pos = np.searchsorted(sorted_keys, keys)
        pos_clipped = np.minimum(pos, len(sorted_keys) - 1)
        found = (pos < len(sorted_keys)) & (sorted_keys[pos_clipped] == keys)
        if not found.any():
            return None, found

        hit = order[pos_clipped[found]]
        dest = np.flatnonzero(found)
        out: np.ndarray | None = None
        for i, (_, _, feats) in enumerate(good):
            mine = owner[hit] == i
            if not mine.any():
                continue
            if out is None:
                out = np.zeros((len(keys), feats.shape[1]), dtype=np.float32)
            out[dest[mine]] = feats[row[hit[mine]]]
        return out, found

    # Writing

    def put(
        self,
        fingerprint: str,
        keys: np.ndarray,
        features: Float[np.ndarray, "n dim"],
        *,
        dataset: str,
        backbone_info: dict[str, object],
        extra: dict[str, object] | None = None,
    ) -> Path:
        """Store one chunk atomically (temp dir, then rename); returns its path."""
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys but {len(features)} feature rows.")
        d = self.backbone_dir(fingerprint)
        d.mkdir(parents=True, exist_ok=True)
        info_path = d / "backbone.json"
        if not info_path.exists():
            atomic.write_text(info_path, json.dumps({**backbone_info, "fingerprint": fingerprint}, indent=2))

        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        tmp = d / f"tmp-{name}"
        tmp.mkdir()
        try:
            features = np.ascontiguousarray(features, dtype=np.float32)
            keys = np.asarray(keys, dtype="S32")
            np.save(tmp / "features.npy", features)
            np.save(tmp / "keys.npy", keys)
            meta = {
                "dataset": dataset,
                "n": int(len(keys)),
                "dim": int(features.shape[1]),
                "created": time.time(),
                "keys_blake2b": _digest(keys),
                "features_blake2b": _digest(features),
                **(extra or {}),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            for f in tmp.iterdir():
                _fsync(f)
            final = d / f"chunk-{name}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    # Inspecting and removing

    def entries(self) -> list[CacheEntry]:
        """One entry per (backbone, dataset) with image count, dim and bytes on disk."""
        rows: dict[tuple[Path, str], CacheEntry] = {}
        if not self.base.is_dir():
            return []
        for bdir in sorted(p for p in self.base.iterdir() if p.is_dir()):
            model = _read_json(bdir / "backbone.json").get("name", bdir.name)
            for chunk in sorted(p for p in bdir.iterdir() if p.is_dir() and p.name.startswith(("chunk-", "damaged-"))):
                meta = _read_json(chunk / "meta.json")
                size = sum(f.stat().st_size for f in chunk.iterdir())
                key = (bdir, str(meta.get("dataset", "?")))
                damaged = chunk.name.startswith("damaged-")
                if not damaged:
                    try:
                        self._open_chunk(chunk)
                    except DamagedChunk:
                        damaged = True  # only reported: listing never changes the cache
                prev = rows.get(key)
                rows[key] = CacheEntry(
                    model=str(model),
                    dataset=key[1],
                    n_images=(prev.n_images if prev else 0) + (0 if damaged else int(meta.get("n", 0))),
                    dim=int(meta.get("dim", 0)) or (prev.dim if prev else 0),
                    bytes=(prev.bytes if prev else 0) + size,
                    path=bdir,
                    damaged=(prev.damaged if prev else 0) + damaged,
                )
        return list(rows.values())

    def verify(self) -> tuple[int, list[DamagedChunk]]:
        """Check every chunk in full (sizes, shapes, both checksums); move damaged ones aside. Returns (n checked, damaged)."""
        checked, bad = 0, []
        if not self.base.is_dir():
            return 0, []
        for bdir in sorted(p for p in self.base.iterdir() if p.is_dir()):
            for chunk in sorted(p for p in bdir.iterdir() if p.is_dir() and p.name.startswith("chunk-")):
                checked += 1
                try:
                    self._open_chunk(chunk, full=True)
                except DamagedChunk as damaged:
                    bad.append(damaged)
                    self._quarantine(damaged)
        return checked, bad

    def models(self) -> list[str]:
        """The ORG:CKPT names with cached features."""
        if not self.base.is_dir():
            return []
        return sorted({str(_read_json(b / "backbone.json").get("name", b.name)) for b in self.base.iterdir() if b.is_dir()})

    def remove(self, *, model: str | None = None, dataset: str | None = None) -> int:
        """Delete cached features of `model` (ORG:CKPT) and/or `dataset`; both None = everything. Returns bytes freed."""
        freed = 0
        if not self.base.is_dir():
            return 0
        for bdir in [p for p in self.base.iterdir() if p.is_dir()]:
            name = _read_json(bdir / "backbone.json").get("name")
            if model is not None and name != model:
                continue
            for chunk in [p for p in bdir.iterdir() if p.is_dir()]:
                if dataset is not None and _read_json(chunk / "meta.json").get("dataset") != dataset:
                    continue
                freed += sum(f.stat().st_size for f in chunk.iterdir())
                shutil.rmtree(chunk)
            if not any(p.is_dir() for p in bdir.iterdir()):
                shutil.rmtree(bdir)
        return freed


class DamagedChunk(Exception):
    """A cache chunk whose files are truncated, missing or do not match their checksums."""

    def __init__(self, chunk: Path, reason: str):
        super().__init__(f"{chunk}: {reason}")
        self.chunk, self.reason = chunk, reason


def _digest(array: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data if array.size else b"")
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fsync(path: Path) -> None:
    with open(path, "rb") as fd:
        os.fsync(fd.fileno())
