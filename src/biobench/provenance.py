"""Where a result came from: command line, code version, packages, hardware, time.

Stored with every experiment so that a number on the leaderboard can be reproduced or
explained. Nothing here may fail a run: missing git or GPU just records None.
"""

from __future__ import annotations

import functools
import importlib.metadata
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = (
    "biobench",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "polars",
    "open_clip_torch",
    "timm",
    "pillow",
    "litellm",
)


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


@functools.cache
def git_commit() -> str | None:
    """Commit of the biobench source tree, with `-dirty` if it has uncommitted changes; None outside git."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def gpu_name(device: str) -> str | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    return None


def provenance(device: str) -> dict:
    return {
        "argv": list(sys.argv),
        "git_commit": git_commit(),
        "package_versions": package_versions(),
        "gpu": gpu_name(device),
        "host": socket.gethostname(),
        "posix_time": time.time(),
    }
