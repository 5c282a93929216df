"""TreeOfLife-10M webdataset shards + TreeOfLife-10M-Captions, streamed deterministically.

Shard format (webdataset): a tar whose members are grouped by `__key__` (the path up to the first dot of
the file name); TreeOfLife-10M's key is the image uuid. Per sample: `KEY.jpg` (or png/jpeg/webp) and the
name forms BioCLIP/BioCAP read, `KEY.sci.txt` (scientific), `KEY.com.txt` (common), `KEY.taxon.txt`
(kingdom..species), `KEY.sci_com.txt`, `KEY.taxon_com.txt` (and `taxonTag*.txt`, "a photo of ...").
Captions come from a table (parquet or CSV, TreeOfLife-10M-Captions' `uuid_caption_description.parquet`)
with columns `uuid` and `caption`, joined on the key.

Order: per epoch the shard list is shuffled (seed, epoch), then raw (undecoded) samples pass a seeded
shuffle buffer and are validated in that order; the stream is a pure function of (seed, epoch), so a data
position (epoch, steps done in it) is resumed by replaying the stream. Each sample's name form and
augmentation are seeded by (seed, epoch, key), so they do not depend on rank, worker or batch position.

DataLoader workers (`entries`, `EpochDataset`): worker w of W decodes, validates, augments and tokenises
the raw positions p = w (mod W) of the epoch's stream (each worker reads all the tar bytes so that positions
agree; decoding, the cost, is split); the DataLoader's in-order round-robin hands the positions back as
0, 1, 2, ..., so the batches are the same for every W, and exact resume and DDP need nothing more.

Skips (counted in `SkipCounts`, logged, never fatal): an unreadable or truncated tar (rest of the shard),
a sample with no image, an image that does not decode, a sample with no non-empty name form, and a sample
whose uuid has no caption (BioCAP trains only on samples carrying every text field: its pipeline keeps a
sample only when the caption is there).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image

from biobench.errors import DataError

logger = logging.getLogger("biobench.train")

NAME_FORMS = ("sci", "com", "taxon", "sci_com", "taxon_com")
"""BioCAP's name forms (its `text_type = random` choices besides the caption)."""
ALL_NAME_FORMS = NAME_FORMS + ("taxonTag", "taxonTag_com")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def braceexpand(pattern: str) -> list[str]:
    """Expand `{a,b}` lists and `{000..159}` ranges (zero padding kept), as webdataset shard lists use."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[: m.start()], m.group(1), pattern[m.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in braceexpand(head + item + tail)]


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard paths from brace patterns, `::`-joined sources or a list; each must exist."""
    specs = spec.split("::") if isinstance(spec, str) else list(spec)
    paths = [p for s in specs for p in braceexpand(s)]
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths:
        raise DataError(f"The shard list '{spec}' names no files.")
    if missing:
        raise DataError(f"{len(missing)} shard(s) of '{spec}' are missing, e.g. {missing[0]}. Check the path and the brace range.")
    return paths


def read_captions(path: Path, uuid_col: str = "uuid", caption_col: str = "caption") -> dict[str, str]:
    """uuid -> caption from a parquet or CSV table; empty captions are left out (treated as missing)."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Caption table {path} does not exist. Give the TreeOfLife-10M-Captions parquet (columns uuid, caption).")
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    for col in (uuid_col, caption_col):
        if col not in df.columns:
            raise DataError(f"Caption table {path} has no column '{col}' (columns: {', '.join(df.columns)}).")
    df = df.select(pl.col(uuid_col).cast(pl.String), pl.col(caption_col).cast(pl.String)).drop_nulls()
    return {u: c for u, c in df.iter_rows() if c.strip()}


@dataclasses.dataclass
class SkipCounts:
    """Samples (and shard tails) skipped, by reason."""

    bad_shard: int = 0
    no_image: int = 0
    corrupt_image: int = 0
    no_names: int = 0
    missing_caption: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _split_key(name: str) -> tuple[str, str] | None:
    m = re.match(r"^((?:.*/|)[^./]+)\.([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else None


def read_tar(path: str, counts: SkipCounts) -> Iterator[dict]:
    """Samples of one shard as {'__key__', ext: bytes}; a damaged tar ends its shard (counted), never raises."""
    sample: dict | None = None
    try:
        with open(path, "rb") as fh:  # a whole tar ends in zero blocks; one cut at a member boundary does not
            fh.seek(max(0, Path(path).stat().st_size - 1024))
            cut = bool(fh.read().strip(b"\0"))
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = _split_key(member.name)
                if parts is None:
                    continue
                key, ext = parts
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} is cut short ({len(data)} of {member.size} bytes)")
                if sample is not None and (sample["__key__"] != key or ext in sample):
                    yield sample
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": path}
                sample[ext] = data
        if cut:
            raise tarfile.ReadError("no end-of-archive blocks: the file is cut short")
    except (tarfile.TarError, OSError, EOFError) as err:
        counts.bad_shard += 1
        logger.warning("Shard %s is damaged (%s); skipping the rest of it.", path, err)
        sample = None  # a sample cut by the damage may be incomplete
    if sample is not None:
        yield sample


@dataclasses.dataclass(frozen=True)
class Sample:
    key: str
    image: Image.Image
    names: dict[str, str]
    caption: str


def validate(raw: dict, captions: dict[str, str], forms: tuple[str, ...], counts: SkipCounts) -> Sample | None:
    """A decoded `Sample`, or None (counted) when the sample is unusable."""
    blob = next((raw[e] for e in IMAGE_EXTS if e in raw), None)
    if blob is None:
        counts.no_image += 1
        return None
    names = {}
    for form in forms:
        text = raw.get(f"{form}.txt")
        if text is not None:
            text = text.decode("utf-8", errors="replace").strip()
            if text:
                names[form] = text
    if not names:
        counts.no_names += 1
        return None
    uuid = raw["__key__"].rsplit("/", 1)[-1]
    caption = captions.get(uuid)
    if caption is None:
        counts.missing_caption += 1
        return None
    try:
        img = Image.open(io.BytesIO(blob))
        img.load()
        img = img.convert("RGB")
    except Exception as err:  # PIL raises many types for damaged files
        counts.corrupt_image += 1
        logger.debug("Sample %s in %s: image does not decode (%s); skipped.", raw["__key__"], raw["__url__"], err)
        return None
    counts.kept += 1
    return Sample(uuid, img, names, caption)


def _shuffle(items: Iterator, bufsize: int, rng: random.Random) -> Iterator:
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    shards: list[str]
    seed: int = 0
    shuffle_buffer: int = 1000
    forms: tuple[str, ...] = NAME_FORMS
    split: str = "samples"
    """'samples': every rank reads every shard and keeps its slice of each global batch (the same batches
    as one process); 'shards': rank r reads shards r, r+W, ... (scales; batches differ from one process)."""


def raw_stream(cfg: StreamConfig, epoch: int, counts: SkipCounts, rank: int = 0, world: int = 1) -> Iterator[dict]:
    """Raw samples of one epoch in the epoch's seeded order (shard shuffle, then a shuffle buffer); nothing decoded."""
    order = list(cfg.shards)
    random.Random(f"{cfg.seed}:{epoch}:shards").shuffle(order)
    if cfg.split == "shards" and world > 1:
        order = order[rank::world]
        if not order:
            raise DataError(f"{len(cfg.shards)} shard(s) cannot feed {world} ranks with split='shards'; use split='samples'.")
    raws = (raw for path in order for raw in read_tar(path, counts))
    yield from _shuffle(raws, cfg.shuffle_buffer, random.Random(f"{cfg.seed}:{epoch}:samples"))


def stream(cfg: StreamConfig, captions: dict[str, str], epoch: int, counts: SkipCounts, rank: int = 0, world: int = 1) -> Iterator[Sample]:
    """Valid samples of one epoch, in the epoch's seeded order (validated after the shuffle)."""
    for raw in raw_stream(cfg, epoch, counts, rank, world):
        s = validate(raw, captions, cfg.forms, counts)
        if s is not None:
            yield s


def choose_name(sample: Sample, seed: int, epoch: int) -> str:
    """The sample's name text: one of its name forms, uniformly, seeded by (seed, epoch, key)."""
    forms = sorted(sample.names)
    return sample.names[random.Random(f"{seed}:{epoch}:{sample.key}:name").choice(forms)]


def seeded_transform(transform: Callable, img: Image.Image, seed: int, epoch: int, key: str) -> torch.Tensor:
    """`transform(img)` with torch's RNG seeded by (seed, epoch, key): augmentations independent of rank and order."""
    s = random.Random(f"{seed}:{epoch}:{key}:aug").getrandbits(63)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        return transform(img)


@dataclasses.dataclass(frozen=True)
class Batch:
    images: torch.Tensor
    names: torch.Tensor
    captions: torch.Tensor
    keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One sample as a DataLoader worker hands it over: transformed image and tokenised texts."""

    key: str
    image: torch.Tensor
    name: torch.Tensor
    caption: torch.Tensor


SKIP_REASONS = ("no_image", "corrupt_image", "no_names", "missing_caption")


def prepared_items(
    cfg: StreamConfig,
    captions: dict[str, str],
    epoch: int,
    *,
    transform: Callable,
    tokenizer: Callable,
    rank: int = 0,
    world: int = 1,
    worker: int = 0,
    n_workers: int = 1,
) -> Iterator[tuple]:
    """What worker `worker` of `n_workers` does: the epoch's raw positions p with p % n_workers == worker, validated,
    transformed and tokenised.

    Every worker reads the whole raw stream (tar bytes: cheap) so that all agree on positions; only its own positions
    are decoded. Yields ('ok', Prepared, bad_shards) or ('skip', reason, bad_shards) per own position, then
    ('end', None, bad_shards); bad_shards is the worker's running count of damaged shards."""
    counts = SkipCounts()
    for p, raw in enumerate(raw_stream(cfg, epoch, counts, rank, world)):
        if p % n_workers != worker:
            continue
        before = dataclasses.replace(counts)
        s = validate(raw, captions, cfg.forms, counts)
        if s is None:
            yield ("skip", next(r for r in SKIP_REASONS if getattr(counts, r) != getattr(before, r)), counts.bad_shard)
            continue
        image = seeded_transform(transform, s.image, cfg.seed, epoch, s.key)
        name = tokenizer([choose_name(s, cfg.seed, epoch)])[0]
        yield ("ok", Prepared(s.key, image, name, tokenizer([s.caption])[0]), counts.bad_shard)
    yield ("end", None, counts.bad_shard)


class EpochDataset(torch.utils.data.IterableDataset):
    """One epoch's positions, split across DataLoader workers round-robin (`prepared_items`)."""

    def __init__(
        self, cfg: StreamConfig, captions: dict[str, str], epoch: int, transform: Callable, tokenizer: Callable, rank: int, world: int
    ):
        super().__init__()
        self.args = (cfg, captions, epoch)
        self.kw = dict(transform=transform, tokenizer=tokenizer, rank=rank, world=world)

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        worker, n = (0, 1) if info is None else (info.id, info.num_workers)
        return prepared_items(*self.args, **self.kw, worker=worker, n_workers=n)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _as_is(item):
    return item


def entries(
    cfg: StreamConfig,
    captions: dict[str, str],
    epoch: int,
    counts: SkipCounts,
    *,
    transform: Callable,
    tokenizer: Callable,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
) -> Iterator[Sample | Prepared]:
    """The epoch's valid samples in order: `Sample`s from this process (0 workers) or `Prepared` ones from
    `num_workers` DataLoader workers. Both give the same samples in the same order, whatever `num_workers` is:
    position p is decoded by worker p % num_workers, and the DataLoader's in-order round-robin over workers hands
    the positions back as 0, 1, 2, ... (worker w's k-th item is position k * num_workers + w)."""
    if num_workers == 0:
        yield from stream(cfg, captions, epoch, counts, rank, world)
        return
    import multiprocessing

    ds = EpochDataset(cfg, captions, epoch, transform, tokenizer, rank, world)
    ctx = "fork" if "fork" in multiprocessing.get_all_start_methods() else None  # fork: the captions table is not pickled
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=num_workers, collate_fn=_as_is, worker_init_fn=_worker_init, multiprocessing_context=ctx
    )
    base, bad = counts.bad_shard, 0
    for kind, payload, b in loader:
        bad = max(bad, b)
        counts.bad_shard = base + bad  # every worker reads every shard; each counts the same damaged ones
        if kind == "ok":
            counts.kept += 1
            yield payload
        elif kind == "skip":
            setattr(counts, payload, getattr(counts, payload) + 1)


def _batch(mine: list, cfg: StreamConfig, epoch: int, transform: Callable, tokenizer: Callable) -> Batch:
    keys = tuple(x.key for x in mine)
    if isinstance(mine[0], Prepared):
        return Batch(
            torch.stack([x.image for x in mine]), torch.stack([x.name for x in mine]), torch.stack([x.caption for x in mine]), keys
        )
    images = torch.stack([seeded_transform(transform, x.image, cfg.seed, epoch, x.key) for x in mine])
    return Batch(images, tokenizer([choose_name(x, cfg.seed, epoch) for x in mine]), tokenizer([x.caption for x in mine]), keys)


def steps(
    cfg: StreamConfig,
    captions: dict[str, str],
    epoch: int,
    *,
    per_device: int,
    accum: int,
    transform: Callable,
    tokenizer: Callable,
    counts: SkipCounts,
    rank: int = 0,
    world: int = 1,
    start: int = 0,
    num_workers: int = 0,
) -> Iterator[list[Batch]]:
    """Optimiser steps of one epoch, each a list of `accum` micro-batches of this rank; skips the first `start` steps.

    A final partial step is dropped, as open_clip drops partial training batches. The steps do not depend on
    `num_workers` (see `entries`); with workers the skipped steps are decoded and transformed too (replay)."""
    group = per_device * (world if cfg.split == "samples" else 1)
    lo = rank * per_device if cfg.split == "samples" else 0
    pending: list = []
    step_idx = 0
    micro: list[Batch] = []
    kw = dict(transform=transform, tokenizer=tokenizer, rank=rank, world=world, num_workers=num_workers)
    for s in entries(cfg, captions, epoch, counts, **kw):
        pending.append(s)
        if len(pending) < group:
            continue
        mine, pending = pending[lo : lo + per_device], []
        micro.append(_batch(mine, cfg, epoch, transform, tokenizer) if step_idx >= start else None)  # type: ignore[arg-type]
        if len(micro) == accum:
            if step_idx >= start:
                yield micro
            micro = []
            step_idx += 1
