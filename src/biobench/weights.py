"""What pins a model's weights, for experiment keys: local weight files are identified by their bytes.

A checkpoint named by a published release (`ViT-B-16/openai`, a timm tag, a Hub repo) means
the same weights everywhere, so its name is its identity. A checkpoint that points at a
file on disk (`resnet50@/ckpts/epoch9.pt`, open_clip's `ARCH/PATH`) does not: the file can be
overwritten. Its experiment key therefore carries a digest of the file's bytes, so new
weights are a new experiment, never a skipped or merged one. Torch-free: planning and
`--help` import this.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_DIGESTS: dict[tuple[str, int, int], str] = {}
TAG = "#weights="
"""What marks a weights digest in a recorded checkpoint."""


def local_weight_files(ckpt: str) -> list[Path]:
    """Files on disk that `ckpt` names: the whole string, or the part after '@' or after the first '/';
    for open_clip's `local-dir:DIR`, DIR's config and weight files."""
    if ckpt.startswith("local-dir:"):
        folder = Path(ckpt.removeprefix("local-dir:")).expanduser()
        exts = (".json", ".bin", ".pth", ".pt", ".safetensors")
        return sorted(p.resolve() for p in folder.glob("*") if p.is_file() and p.suffix in exts) if folder.is_dir() else []
    candidates = [ckpt]
    for sep in ("@", "/"):
        if sep in ckpt:
            candidates.append(ckpt.split(sep, 1)[1])
    out: list[Path] = []
    for c in candidates:
        p = Path(c).expanduser()
        if c and p.is_file() and p.resolve() not in out:
            out.append(p.resolve())
    return out


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes (remembered per path, size and mtime within a process)."""
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fd:
            for block in iter(lambda: fd.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def weights_tag(ckpt: str) -> str:
    """`#weights=DIGEST` (12 hex digits) for a checkpoint naming local files; '' for a published one."""
    files = local_weight_files(ckpt)
    if not files:
        return ""
    h = hashlib.blake2b(digest_size=6)
    for f in files:
        h.update(file_digest(f).encode())
    return TAG + h.hexdigest()
