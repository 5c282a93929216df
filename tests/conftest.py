"""Shared test fixtures: generated datasets, isolated caches, config writing, CLI running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Never touch the user's cache or a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOBENCH_CACHE", str(tmp_path / "feature-cache"))


@pytest.fixture(scope="session")
def newt_dir(tmp_path_factory) -> Path:
    """A NeWT-format fixture (7 tasks, 3 clusters), written once per session; treat as read-only."""
    from biobench.tasks import newt

    d = tmp_path_factory.mktemp("newt")
    newt.make_fixture(d, seed=0)
    return d


@pytest.fixture(scope="session")
def newt_shuffled_dir(tmp_path_factory) -> Path:
    from biobench.tasks import newt

    d = tmp_path_factory.mktemp("newt-shuffled")
    newt.make_fixture(d, seed=0, shuffle_labels=True)
    return d


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def config_file(tmp_path):
    """Write a TOML config into tmp_path: `config_file(body, name='c.toml') -> Path`."""

    def make(body: str, name: str = "config.toml") -> Path:
        return write_config(tmp_path / name, body)

    return make


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m biobench ARGS` in a fresh process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "biobench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def mllm_server():
    """A real OpenAI-compatible chat-completions server on 127.0.0.1 (tests/mllm_server.py), reset for each test."""
    from tests.mllm_server import shared_server

    server = shared_server()
    server.state.reset()
    yield server
    server.state.reset()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm cluster (tests/slurm_cluster.py), shared by the session's tests; skips, saying why,
    where the daemons cannot start."""
    from tests.slurm_cluster import ClusterUnavailable, SlurmCluster

    try:
        cluster = SlurmCluster().start()
    except ClusterUnavailable as err:
        pytest.skip(f"no Slurm cluster here: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
