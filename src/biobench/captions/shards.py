"""TreeOfLife-10M webdataset shards read as streams with `tarfile` (no webdataset dependency), and brace expansion.

A shard is a tar whose members `KEY.EXT` group into one sample per KEY, as webdataset groups
them (KEY = the member's path up to the first dot of its file name; EXT = the rest). A
TreeOfLife-10M sample has `jpg` and the text fields `scientific_name.txt`, `taxonomic_name.txt`,
`common_name.txt`, `sci.txt`, `com.txt`, `taxon.txt`, `taxonTag.txt`, `sci_com.txt`,
`taxon_com.txt`, `taxonTag_com.txt`; KEY is the image's uuid (treeoflife_id). Field names are
lower-cased, as webdataset's `group_by_keys(lcase=True)` does (so `taxonTag.txt` is `taxontag.txt`).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from biobench.captions.taxa import RANKS
from biobench.errors import DataError

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: `a-{000..002}.tar` -> a-000.tar a-001.tar a-002.tar (zero padding kept); `{x,y}` lists."""
    matches = [m for m in (_RANGE.search(pattern), _LIST.search(pattern)) if m]
    if not matches:
        return [pattern]
    m = min(matches, key=lambda m: m.start())  # the leftmost group varies slowest, as in bash
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if m.re is _RANGE:
        lo, hi = m.group(1), m.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        parts = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        parts = m.group(1).split(",")
    return [p for part in parts for p in expand_braces(head + part + tail)]


def split_key(name: str) -> tuple[str, str] | None:
    """(KEY, EXT) of a member name as webdataset splits it, or None for a name without an extension."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), ext


def check_tar(path: Path) -> None:
    """A `DataError` naming `path` unless it exists and starts like a tar file."""
    if not path.is_file():
        raise DataError(f"Shard {path} does not exist (check the --shards pattern and its brace range).")
    try:
        with tarfile.open(path, "r|*") as tar:
            tar.next()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(
            f"Shard {path} is not a readable tar file ({err}); webdataset shards are tar archives of KEY.jpg + KEY.*.txt."
        ) from None


def iter_samples(path: Path) -> Iterator[dict[str, bytes | str]]:
    """Samples of one shard in order: {'__key__': KEY, ext.lower(): bytes, ...}; a `DataError` naming the shard if it is corrupt."""
    current: dict | None = None
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = split_key(member.name)
                if parts is None or Path(member.name).name.startswith(("._", "__")):
                    continue
                key, ext = parts
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                current[ext.lower()] = data
    except (tarfile.TarError, EOFError, OSError) as err:
        last = current["__key__"] if current else "none"
        raise DataError(f"Shard {path} is corrupt or truncated after sample {last}: {err}") from None
    if current is not None:
        yield current


def text_field(sample: dict, name: str) -> str:
    value = sample.get(name.lower(), b"")
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


_TAG = re.compile(r"\b(" + "|".join(RANKS) + r")\s+(.+?)(?=\s+\b(?:" + "|".join(RANKS) + r")\b\s|\s+with common name|\.?\s*$)")


def sample_ranks(sample: dict) -> dict[str, str]:
    """The sample's ranks from `taxonTag.txt` ("a photo of kingdom K phylum P ... species s."), else a 7-word `taxonomic_name.txt`."""
    tag = text_field(sample, "taxonTag.txt") or text_field(sample, "taxonTag_com.txt")
    ranks = {m.group(1): m.group(2).strip().rstrip(".") for m in _TAG.finditer(tag.removeprefix("a photo of").strip())}
    if ranks:
        return {r: ranks.get(r, "") for r in RANKS}
    words = text_field(sample, "taxonomic_name.txt").split()
    return dict(zip(RANKS, words)) if len(words) == len(RANKS) else {}
