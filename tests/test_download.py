"""Tests for biobench.download against a real HTTP server on 127.0.0.1.

The server is a ThreadingHTTPServer with a handler that supports `Range: bytes=N-` and can
be told, through `server.state`, to fail requests with 500, cut a response short, or ignore
Range; so resuming and retrying are exercised over real sockets, without mocking urllib.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from biobench import download
from biobench.download import extract, fetch, md5sum
from biobench.errors import DataError

DATA = os.urandom(300_000)  # random so gzip cannot shrink it and truncation lands in data
DATA_MD5 = hashlib.md5(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state
        with self.server.lock:
            state["requests"].append({"path": self.path, "range": self.headers.get("Range")})
            fail = state["fail_next"] > 0
            if fail:
                state["fail_next"] -= 1
            cut_after, state["cut_after"] = state["cut_after"], None
        if fail:
            self.send_error(500, "injected failure")
            return
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "not found")
            return
        body = path.read_bytes()
        size = len(body)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not state["ignore_range"]:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            body = body[start:]
        else:
            self.send_response(200)
        # Full Content-Length even when cutting short: that is how a dropped connection looks.
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut_after is not None:
            body = body[:cut_after]
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    root: Path
    state: dict
    lock: threading.Lock

    def url(self, name: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{name}"

    @property
    def requests(self) -> list[dict]:
        return self.state["requests"]


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.bin").write_bytes(DATA)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.root = root
    srv.state = {"requests": [], "fail_next": 0, "cut_after": None, "ignore_range": False}
    srv.lock = threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)


def _fetch(server: _Server, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("chunk_bytes", 64 * 1024)
    return fetch(server.url("data.bin"), dest, **kwargs)


# --- fetch ----------------------------------------------------------------------------


def test_plain_download_verifies_md5_and_skips_second_call(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    assert _fetch(server, dest, md5=DATA_MD5) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("data.bin.part").exists()
    assert len(server.requests) == 1
    assert server.requests[0]["range"] is None

    _fetch(server, dest, md5=DATA_MD5.upper())  # md5 comparison ignores case
    _fetch(server, dest)
    assert len(server.requests) == 1  # already there: no network access


def test_existing_file_with_wrong_md5_is_downloaded_again(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    _fetch(server, dest, md5=DATA_MD5)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 1


def test_resume_from_part_file(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    half = len(DATA) // 2
    dest.with_name("data.bin.part").write_bytes(DATA[:half])
    _fetch(server, dest, md5=DATA_MD5)
    assert server.requests[0]["range"] == f"bytes={half}-"
    assert dest.read_bytes() == DATA
    assert not dest.with_name("data.bin.part").exists()


def test_complete_part_file_answered_416_is_used(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(DATA)
    _fetch(server, dest, md5=DATA_MD5)
    assert server.requests[0]["range"] == f"bytes={len(DATA)}-"
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    server.state["ignore_range"] = True
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"x" * 1000)  # must be overwritten, not appended to
    _fetch(server, dest, md5=DATA_MD5)
    assert server.requests[0]["range"] == "bytes=1000-"
    assert dest.read_bytes() == DATA


def test_dropped_connection_is_retried_and_resumed(server: _Server, tmp_path: Path) -> None:
    server.state["cut_after"] = 100_000
    dest = tmp_path / "data.bin"
    _fetch(server, dest, md5=DATA_MD5)
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-"]


def test_persistent_500_keeps_part_file_for_rerun(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    part = dest.with_name("data.bin.part")
    part.write_bytes(DATA[:1000])
    server.state["fail_next"] = 100
    with pytest.raises(DataError) as info:
        _fetch(server, dest, retries=2)
    msg = str(info.value)
    assert server.url("data.bin") in msg
    assert str(part) in msg and "rerun" in msg.lower()
    assert len(server.requests) == 3  # first try + 2 retries
    assert part.read_bytes() == DATA[:1000]
    assert not dest.exists()

    # Rerunning once the server recovers resumes the partial file.
    server.state["fail_next"] = 0
    _fetch(server, dest, md5=DATA_MD5)
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert dest.read_bytes() == DATA


def test_404_is_not_retried(server: _Server, tmp_path: Path) -> None:
    url = server.url("missing.bin")
    with pytest.raises(DataError) as info:
        fetch(url, tmp_path / "missing.bin", timeout_s=5.0, retries=3)
    assert "404" in str(info.value) and url in str(info.value)
    assert len(server.requests) == 1


def test_md5_mismatch_removes_file(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    wrong = "0" * 32
    with pytest.raises(DataError) as info:
        _fetch(server, dest, md5=wrong)
    msg = str(info.value)
    assert wrong in msg and DATA_MD5 in msg and server.url("data.bin") in msg and "data.bin" in msg
    assert not dest.exists()
    assert not dest.with_name("data.bin.part").exists()


def test_md5sum(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert md5sum(path, chunk_bytes=4096) == DATA_MD5


# --- extract --------------------------------------------------------------------------


FILES = {"a.txt": b"hello\n", "sub/b.bin": DATA[:5000]}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            _add(tf, name, data)
    return path


def _assert_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (root / name).read_bytes() == data


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_extract_tar_round_trip(tmp_path: Path, suffix: str, mode: str) -> None:
    archive = _write_tar(tmp_path / f"a{suffix}", FILES, mode)
    extract(archive, tmp_path / "out")
    _assert_tree(tmp_path / "out", FILES)


def test_extract_zip_round_trip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    extract(archive, tmp_path / "out")
    _assert_tree(tmp_path / "out", FILES)


@pytest.fixture(params=[True, False], ids=["tar-filter", "manual-checks"])
def tar_filter(request, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run tar safety tests with tarfile's "data" filter and with the manual fallback."""
    monkeypatch.setattr(download, "HAS_TAR_FILTER", request.param)
    return request.param


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/tmp/biobench-test-evil.txt", "ok/../../evil.txt"])
def test_extract_tar_rejects_escaping_names(tmp_path: Path, tar_filter: bool, bad_name: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _write_tar(work / "bad.tar.gz", {"good.txt": b"ok", bad_name: b"evil"})
    dest = work / "out"
    with pytest.raises(DataError) as info:
        extract(archive, dest)
    assert "bad.tar.gz" in str(info.value) and bad_name in str(info.value)
    assert _files_under(work) <= {"bad.tar.gz", "out"}  # nothing written, not even good.txt
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/biobench-test-evil.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd"])
def test_extract_tar_rejects_links_outside(tmp_path: Path, tar_filter: bool, kind: bytes, target: str) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = kind
        info.linkname = target
        tf.addfile(info)
    dest = tmp_path / "out"
    with pytest.raises(DataError) as info:
        extract(archive, dest)
    assert "links.tar" in str(info.value) and "link" in str(info.value)
    assert not (dest / "link").exists() and not (dest / "link").is_symlink()


def test_extract_tar_allows_links_inside(tmp_path: Path, tar_filter: bool) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        _add(tf, "sub/real.txt", b"real")
        info = tarfile.TarInfo("sub/alias.txt")
        info.type = tarfile.SYMTYPE
        info.linkname = "real.txt"
        tf.addfile(info)
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "alias.txt").read_bytes() == b"real"


def test_extract_zip_rejects_escaping_names(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", b"ok")
        zf.writestr("../evil.txt", b"evil")
    with pytest.raises(DataError) as info:
        extract(archive, work / "out")
    assert "bad.zip" in str(info.value) and "../evil.txt" in str(info.value)
    assert _files_under(work) <= {"bad.zip", "out"}
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip"])
def test_extract_truncated_archive(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"big{suffix}"
    files = {"a.bin": DATA, "b.bin": DATA[::-1]}
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        _write_tar(archive, files, "w:gz" if suffix == ".tar.gz" else "w")
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as info:
        extract(archive, tmp_path / "out")
    msg = str(info.value)
    assert archive.name in msg and "delete" in msg.lower() and "rerun" in msg.lower()


def test_extract_unsupported_type(tmp_path: Path) -> None:
    archive = tmp_path / "a.rar"
    archive.write_bytes(b"x")
    with pytest.raises(DataError, match="a.rar"):
        extract(archive, tmp_path / "out")


# --- declared resources -------------------------------------------------------------


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_resource_in_pieces_is_joined_checked_against_its_md5_file_and_unpacked_once(server: _Server, tmp_path: Path) -> None:
    files = {"clip/1.jpg": b"one" * 1000, "clip/2.jpg": os.urandom(5000)}
    blob = _zip_bytes(files)
    for i, piece in enumerate((blob[:2000], blob[2000:4000], blob[4000:])):
        (server.root / f"frames_part_a{'abc'[i]}").write_bytes(piece)
    (server.root / "frames_md5.txt").write_text(f"{hashlib.md5(blob).hexdigest()}  frames.zip\n")
    r = download.Resource(tuple(server.url(f"frames_part_a{c}") for c in "abc"), "frames.zip", None, ("images/clip/*.jpg",),
                          into="images", md5_url=server.url("frames_md5.txt"))  # fmt: skip
    download.fetch_resources("t", tmp_path / "d", [r])
    download.check_members("t", tmp_path / "d", [r])
    _assert_tree(tmp_path / "d" / "images", files)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [".biobench-download", "images"]  # pieces and zip gone
    n = len(server.requests)
    download.fetch_resources("t", tmp_path / "d", [r])  # unpacked before: nothing fetched again
    assert len(server.requests) == n

    (server.root / "frames_md5.txt").write_text("0" * 32 + "  frames.zip\n")
    with pytest.raises(DataError, match="joined from 3 pieces, has md5"):
        download.fetch_resources("t", tmp_path / "e", [r])


def test_members_that_do_not_appear_are_named(server: _Server, tmp_path: Path) -> None:
    (server.root / "a.zip").write_bytes(_zip_bytes({"x/1.txt": b"1"}))
    r = download.Resource(server.url("a.zip"), "a.zip", None, ("x/*.txt", "y/*.jpg"))
    download.fetch_resources("t", tmp_path, [r])
    with pytest.raises(DataError, match=r"t: .*a.zip did not provide y/\*.jpg"):
        download.check_members("t", tmp_path, [r])
