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
import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

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


def weights_tag(ckpt: str, org: str = "") -> str:
    """`#weights=DIGEST` (12 hex digits) for a checkpoint naming local files; '' for a published one
    (the `hf` org: `hf_tag`, which also pins a Hub id by its cached revision)."""
    if org == "hf":
        return hf_tag(ckpt)
    files = local_weight_files(ckpt)
    if not files:
        return ""
    h = hashlib.blake2b(digest_size=6)
    for f in files:
        h.update(file_digest(f).encode())
    return TAG + h.hexdigest()


HF_FILE_SUFFIXES = (".json", ".bin", ".safetensors", ".pth", ".pt", ".txt", ".model", ".tiktoken")
"""Files of a `save_pretrained` folder that determine a Hugging Face model: config, weights, tokenizer and processor."""
_WARNED: set[str] = set()


def hf_files(folder: Path) -> list[Path]:
    """The files of a Hugging Face model folder that its identity covers (config, weights, tokenizer, processor)."""
    return sorted(p.resolve() for p in Path(folder).glob("*") if p.is_file() and p.suffix in HF_FILE_SUFFIXES)


def folder_digest(folder: Path) -> str:
    """12 bytes of BLAKE2b over the names and digests of `hf_files(folder)`."""
    h = hashlib.blake2b(digest_size=12)
    for f in hf_files(folder):
        h.update(f"{f.name}|{file_digest(f)}|".encode())
    return h.hexdigest()


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_snapshot(repo: str, revision: str | None = None) -> tuple[str, Path] | None:
    """(commit, snapshot folder) that the local Hub cache resolves `repo` at `revision` (default: main) to, without
    any network access; None when the repo or revision is not cached."""
    root = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    rev = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        commit = rev
    else:
        ref = root / "refs" / rev
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snap = root / "snapshots" / commit
    return (commit, snap) if snap.is_dir() else None


def hf_tag(ckpt: str) -> str:
    """The `hf` org's pin: `#weights=DIGEST` of a local folder's files; `#revision=COMMIT` (12 hex digits) of a Hub id
    the local cache resolves; '' for a Hub id pinned by its own 40-digit `@COMMIT`, or not cached (with a warning)."""
    path = Path(ckpt).expanduser()
    if path.is_dir():
        return TAG + folder_digest(path)[:12]
    repo, _, revision = ckpt.rpartition("@") if "@" in ckpt else (ckpt, "", "")
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return ""
    snap = hub_snapshot(repo, revision or None)
    if snap is not None:
        return f"#revision={snap[0][:12]}"
    if ckpt not in _WARNED:
        _WARNED.add(ckpt)
        logger.warning(
            "hf:%s is not in the local Hugging Face cache, so its experiment key cannot pin the weights' revision; "
            "results are keyed by the name alone. Write hf:%s@COMMIT to pin it.", ckpt, repo,
        )  # fmt: skip
    return ""
