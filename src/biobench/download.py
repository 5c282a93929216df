"""Fetch and unpack public dataset archives for `biobench download TASK --dir DIR`.

Dataset archives are large and hosted on servers that drop connections, so `fetch`
streams into a `.part` file, resumes it with an HTTP Range request, retries network
failures, checks an md5 when one is known, and only then renames the file into place:
a file at `dest` is always complete. `extract` unpacks .tar, .tar.gz/.tgz and .zip
archives without letting a member write outside the target directory.

Only the standard library is used, so downloading needs no extra dependencies.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import logging
import os
import pathlib
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence

from biobench.errors import DataError
from biobench.progress import Progress

# Base delay of the exponential backoff between retries (1 s, 2 s, 4 s, ...).
# A module constant so tests can set it to 0.
RETRY_BACKOFF_S = 1.0

# tarfile's extraction filters (PEP 706) arrived in Python 3.11.4 (and backports).
# A module constant so tests can exercise the manual fallback too.
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")

_USER_AGENT = "biobench-download/0.1 (+python-urllib)"

# Errors worth retrying: the connection failed, stalled or was cut short.
# (http.client.HTTPException covers IncompleteRead, which a dropped connection raises
# mid-body; urllib.error.HTTPError is a URLError but is handled separately by status.)
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


class _ServerError(Exception):
    """An HTTP 5xx answer: the server's fault, so worth retrying."""


def md5sum(path: pathlib.Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex md5 of the file at `path`, read in chunks so large archives need little memory."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    dest: pathlib.Path,
    *,
    md5: str | None = None,
    desc: str | None = None,
    chunk_bytes: int = 1 << 20,
    timeout_s: float = 60.0,
    retries: int = 3,
) -> pathlib.Path:
    """Download `url` to `dest` (resuming, retrying, checking `md5`); return `dest`.

    If `dest` already exists (and matches `md5` when given) nothing is downloaded.
    Raises DataError when the download fails for good or the md5 does not match.
    """
    dest = pathlib.Path(dest)
    expected = md5.lower() if md5 else None
    if dest.exists():
        if expected is None or md5sum(dest, chunk_bytes) == expected:
            return dest
        # A stale or corrupt copy: download it again; os.replace overwrites it at the end.
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    desc = desc or dest.name

    retries = max(retries, 0)
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, desc=desc, chunk_bytes=chunk_bytes, timeout_s=timeout_s)
            break
        except urllib.error.HTTPError as err:
            err.close()
            if err.code < 500:
                raise DataError(
                    f"Downloading {url} failed: HTTP {err.code} {err.reason}. "
                    "Check that the URL is still valid (the dataset may have moved)."
                ) from None
            last_err: BaseException = err
        except (_ServerError, *_NETWORK_ERRORS) as err:
            last_err = err
        if attempt < retries:
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
    else:
        if part.exists():
            hint = f"The partial download in {part} will be resumed by rerunning the same command."
        else:
            hint = "Check the network connection and rerun the same command."
        raise DataError(f"Downloading {url} failed after {retries + 1} attempts ({last_err}). {hint}") from last_err

    if expected is not None:
        actual = md5sum(part, chunk_bytes)
        if actual != expected:
            # A corrupt part file would only be resumed into another corrupt file.
            part.unlink()
            raise DataError(
                f"Downloaded file {dest} (from {url}) has md5 {actual}, expected {expected}; "
                "deleted it. Rerun the same command to download it again."
            )
    # Atomic on one filesystem: `dest` never exists half-written.
    os.replace(part, dest)
    return dest


def fetch_many(what: str, jobs: Sequence[tuple[str, pathlib.Path, str | None]], *, workers: int = 1) -> None:
    """`fetch` every (url, dest, md5) of `jobs` on `workers` threads, with one progress line for all of them.

    Files already present (and matching their md5) are kept, so an interrupted run resumes.
    Failures do not stop the others; at the end they are one `DataError` that counts them,
    shows a few and says to rerun.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(job: tuple[str, pathlib.Path, str | None]) -> str | None:
        url, dest, md5 = job
        try:
            fetch(url, dest, md5=md5 or None, desc=pathlib.Path(dest).name)
        except DataError as err:
            return f"{pathlib.Path(dest).name}: {err}"
        return None

    per_file = logging.getLogger("biobench.progress")  # one line for thousands of small files, not one per file
    level = per_file.level
    per_file.setLevel(logging.WARNING)
    failed, last = [], time.monotonic()
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for i, err in enumerate(pool.map(one, jobs)):
                if err is not None:
                    failed.append(err)
                if time.monotonic() - last > 15 or i + 1 == len(jobs):
                    last = time.monotonic()
                    logging.getLogger(__name__).info("%s: %d / %d (%d failed)", what, i + 1, len(jobs), len(failed))
    finally:
        per_file.setLevel(level)
    if failed:
        shown = "\n  ".join(failed[:5])
        raise DataError(f"{len(failed)} of {len(jobs)} {what} failed to download, e.g.\n  {shown}\nRerun the same command to retry them.")


def _download_once(url: str, part: pathlib.Path, *, desc: str, chunk_bytes: int, timeout_s: float) -> None:
    """One attempt: stream `url` into `part`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Nothing left past `offset`: the part file is complete, unless the server
            # tells us the full size and it differs (then start over).
            size = _range_total(err.headers.get("Content-Range"))
            err.close()
            if size is not None and size != offset:
                part.unlink()
                raise _ServerError(f"server reports {size} bytes, {part} has {offset}") from None
            return
        if err.code >= 500:
            err.close()
            raise _ServerError(f"HTTP {err.code} {err.reason}") from None
        raise

    with resp:
        if resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start != offset:
                # Appending bytes from the wrong position would corrupt the file silently.
                part.unlink()
                raise _ServerError(f"server resumed at byte {start}, not {offset}")
            mode = "ab"
        else:
            # The server ignored Range (200): restart from zero.
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        total = offset + remaining if remaining is not None else 0

        received = 0
        with open(part, mode) as f, Progress(total, desc, "B") as bar:
            bar.update(offset)
            while chunk := resp.read(chunk_bytes):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # http.client normally raises IncompleteRead itself; this also catches servers that
        # close early on chunked or otherwise unusual responses.
        if remaining is not None and received < remaining:
            raise ConnectionError(f"connection closed after {received:,} of {remaining:,} bytes")


def _range_start(content_range: str | None) -> int | None:
    """First byte of `bytes START-END/TOTAL`, or None if missing or malformed."""
    try:
        return int(content_range.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(content_range: str | None) -> int | None:
    """TOTAL of `bytes */TOTAL` (a 416 answer), or None if missing, `*` or malformed."""
    try:
        return int(content_range.rsplit("/", 1)[1])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def extract(archive: pathlib.Path, dest_dir: pathlib.Path, *, desc: str | None = None) -> None:
    """Unpack a .tar, .tar.gz/.tgz or .zip `archive` into `dest_dir`.

    Raises DataError if the archive is corrupt or truncated, or if any member would be
    written outside `dest_dir` (absolute paths, `..`, links pointing outside).
    """
    archive = pathlib.Path(archive)
    dest_dir = pathlib.Path(dest_dir)
    desc = desc or f"extract {archive.name}"
    name = archive.name.lower()
    dest_dir.mkdir(parents=True, exist_ok=True)
    if name.endswith(".zip"):
        _extract_zip(archive, dest_dir, desc)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        _extract_tar(archive, dest_dir, desc)
    else:
        raise DataError(f"Cannot extract {archive}: unsupported archive type (expected .tar, .tar.gz, .tgz or .zip).")


def _corrupt(archive: pathlib.Path, err: BaseException) -> DataError:
    return DataError(f"Archive {archive} is corrupt or truncated ({err}). Delete it and rerun the same command to download it again.")


def _unsafe(archive: pathlib.Path, member: str, why: str) -> DataError:
    return DataError(f"Refusing to extract {archive}: member {member!r} {why}. The archive may be malicious or corrupt.")


def _check_name(archive: pathlib.Path, name: str) -> None:
    """Reject absolute names and `..` components, whatever the extractor would do with them."""
    # tarfile's "data" filter and zipfile silently strip a leading "/" and "..";
    # a member that needs that is not one we trust, so we refuse instead.
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise _unsafe(archive, name, "has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise _unsafe(archive, name, "has a '..' path component")


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


# What a truncated or damaged gzip/tar stream raises while being read.
_TAR_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
# Raised by the "data" filter when it refuses a member (absent on older Pythons).
_FILTER_ERRORS = (tarfile.FilterError,) if HAS_TAR_FILTER else ()


def _extract_tar(archive: pathlib.Path, dest_dir: pathlib.Path, desc: str) -> None:
    root = os.path.realpath(dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tf:
            # Reading every header first costs one extra pass but detects truncation and
            # unsafe names before anything is written, and gives progress a total.
            members = tf.getmembers()
            for m in members:
                _check_name(archive, m.name)
            with Progress(len(members), desc, "files") as bar:
                for m in members:
                    if HAS_TAR_FILTER:
                        # The "data" filter also rejects links leaving dest_dir, device
                        # files, and drops setuid bits.
                        tf.extract(m, dest_dir, filter="data")
                    else:
                        _check_tar_member(archive, m, root)
                        tf.extract(m, dest_dir)
                    bar.update(1)
    except _FILTER_ERRORS as err:
        raise _unsafe(archive, err.tarinfo.name, f"is unsafe ({err})") from None
    except (tarfile.TarError, *_TAR_READ_ERRORS) as err:
        raise _corrupt(archive, err) from None


def _check_tar_member(archive: pathlib.Path, m: tarfile.TarInfo, root: str) -> None:
    """Fallback for Pythons without tar filters: keep the member and its link inside `root`."""
    # realpath, not normpath: links extracted earlier can redirect later members. Only the
    # parent is resolved, so an existing link at the member's own path is not followed.
    parent = os.path.realpath(os.path.join(root, os.path.dirname(m.name)))
    target = os.path.join(parent, os.path.basename(m.name))
    if not _inside(root, target):
        raise _unsafe(archive, m.name, "would be written outside the destination")
    if m.issym() or m.islnk():
        if os.path.isabs(m.linkname):
            raise _unsafe(archive, m.name, f"links to the absolute path {m.linkname!r}")
        # Symlinks resolve relative to their directory, hard links relative to the root.
        base = parent if m.issym() else root
        if not _inside(root, os.path.realpath(os.path.join(base, m.linkname))):
            raise _unsafe(archive, m.name, f"links outside the destination ({m.linkname!r})")
    elif not (m.isfile() or m.isdir()):
        raise _unsafe(archive, m.name, "is a device or other special file")


def _extract_zip(archive: pathlib.Path, dest_dir: pathlib.Path, desc: str) -> None:
    root = os.path.realpath(dest_dir)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            # Check every name before writing anything.
            for info in infos:
                _check_name(archive, info.filename)
                target = os.path.realpath(os.path.join(root, info.filename))
                if not _inside(root, target):
                    raise _unsafe(archive, info.filename, "would land outside the destination")
            with Progress(len(infos), desc, "files") as bar:
                for info in infos:
                    zf.extract(info, dest_dir)
                    bar.update(1)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        # BadZipFile covers a missing central directory (truncation) and CRC mismatches.
        raise _corrupt(archive, err) from None


##########################
# Declared task datasets #
##########################


@dataclasses.dataclass(frozen=True)
class Resource:
    """One file a task's dataset is downloaded as: fetched, checked, unpacked into the data directory."""

    url: str | tuple[str, ...]
    """Where to get it; a tuple lists the pieces a large file is published in, joined in order."""
    filename: str
    """Saved as DIR/filename while downloading (removed after unpacking an archive)."""
    md5: str | None
    """Published checksum of the whole file, when there is one."""
    members: tuple[str, ...]
    """Glob patterns, relative to DIR, of what it provides once laid out (checked after the task's download step)."""
    extract: bool = True
    """Unpack the archive (.zip, .tar, .tar.gz) into DIR / `into`; False keeps the file as it is."""
    into: str = ""
    """Sub-directory of DIR the archive unpacks into."""
    md5_url: str | None = None
    """A published checksum file (its first word is the md5 of the whole file), when the sum is not known in advance."""


def fetch_resources(task: str, root: pathlib.Path, resources: Sequence[Resource]) -> None:
    """Fetch every resource into `root` and unpack archives (each deleted once unpacked).

    Interrupted downloads resume when run again, and an archive unpacked by an earlier run
    (a stamp in DIR/.biobench-download/ says so) is not fetched again: its file is gone.
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for r in resources:
        stamp = root / ".biobench-download" / f"{r.filename.replace('/', '_')}.unpacked"
        if r.extract and stamp.exists():
            continue
        md5 = r.md5
        if md5 is None and r.md5_url is not None:
            sums = fetch(r.md5_url, root / f"{r.filename}.md5", desc=f"{task}: {r.filename} md5")
            md5 = sums.read_text().split()[0].lower()
            sums.unlink()
        path = root / r.filename
        if isinstance(r.url, str):
            fetch(r.url, path, md5=md5, desc=f"{task}: {r.filename}")
        elif not path.exists():
            pieces = [
                fetch(u, root / f"{r.filename}.{i:03d}", desc=f"{task}: {r.filename} ({i + 1}/{len(r.url)})") for i, u in enumerate(r.url)
            ]
            _join(pieces, path, md5)
        if r.extract:
            extract(path, root / r.into, desc=f"{task}: extract {r.filename}")
            stamp.parent.mkdir(exist_ok=True)
            stamp.write_text(f"{r.url}\n")
            path.unlink()


def _join(pieces: Sequence[pathlib.Path], dest: pathlib.Path, md5: str | None) -> None:
    """Concatenate `pieces` into `dest` (atomically), check `md5`, delete the pieces."""
    part = dest.with_name(dest.name + ".joining")
    with open(part, "wb") as out:
        for p in pieces:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 24):
                    out.write(chunk)
    if md5 is not None and (actual := md5sum(part)) != md5.lower():
        part.unlink()
        raise DataError(
            f"{dest}, joined from {len(pieces)} pieces, has md5 {actual}, expected {md5}; delete the pieces ({pieces[0]}, ...) and download again."
        )
    os.replace(part, dest)
    for p in pieces:
        p.unlink()


def check_members(task: str, root: pathlib.Path, resources: Sequence[Resource]) -> None:
    """Raise a `DataError` for any resource whose members are not in `root` (after the task's last step)."""
    for r in resources:
        absent = [m for m in r.members if not any(pathlib.Path(root).glob(m))]
        if absent:
            raise DataError(
                f"{task}: {r.url} did not provide {', '.join(absent)} in {root}; the archive's layout may have "
                "changed. Report it, or lay the files out by hand as the task's documentation says."
            )


def manual_steps(task: str, root: pathlib.Path, why: str, steps: Sequence[str], layout: str) -> DataError:
    """The error for a dataset biobench cannot fetch itself (it needs a login or an accepted licence).

    It says why, lists the numbered `steps` to get the files by hand, then the `layout` to
    place them in; `{dir}` in the steps and the layout becomes `root`.
    """
    numbered = "\n".join(f"  {i}. {s.format(dir=root)}" for i, s in enumerate(steps, start=1))
    return DataError(f"{task}: {why}. Get it by hand:\n{numbered}\nThen {root} should hold:\n{layout.format(dir=root)}")
