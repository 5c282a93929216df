"""The thread policy for small CPU torch probes: the count it picks, restoring torch's setting, same results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biobench.probes import linear, mlp, threads


def test_choose_bounds(monkeypatch):
    monkeypatch.delenv("BIOBENCH_PROBE_THREADS", raising=False)
    big = 1e12
    assert threads.choose(big, default=8, cores=8, load=0.0) == 8  # quiet: all cores
    assert threads.choose(big, default=8, cores=8, load=4.0) == 4  # four other runnable threads
    assert threads.choose(big, default=2, cores=2, load=8.0) == 1  # busy machine: one thread, never zero
    assert threads.choose(big, default=4, cores=16, load=0.0) == 4  # never above torch's own setting
    assert threads.choose(2.5 * threads.MACS_PER_THREAD, default=16, cores=16, load=0.0) == 2  # small step: few threads
    assert threads.choose(1.0, default=16, cores=16, load=0.0) == 1


def test_load_counts_other_processes_only(tmp_path, monkeypatch):
    """The running count of /proc/loadavg, less this process's own runnable threads; the load average when unreadable."""
    fake = tmp_path / "loadavg"
    fake.write_text("0.50 0.40 0.30 5/300 12345\n")
    monkeypatch.setattr(threads, "_own_running", lambda: 2)
    assert threads._load(samples=3, interval_s=0, loadavg=str(fake)) == 3.0
    monkeypatch.setattr(threads, "_own_running", lambda: 9)
    assert threads._load(samples=1, interval_s=0, loadavg=str(fake)) == 0.0  # never negative
    fake.write_text("garbage\n")
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.5, 0.0, 0.0))
    assert threads._load(samples=1, interval_s=0, loadavg=str(fake)) == 2.5  # 1-minute average less this process
    assert threads._own_running() >= 1


def test_env_override(monkeypatch):
    monkeypatch.setenv("BIOBENCH_PROBE_THREADS", "3")
    assert threads.choose(1.0, default=1, cores=1, load=9.0) == 3
    monkeypatch.setenv("BIOBENCH_PROBE_THREADS", "many")
    with pytest.raises(ValueError, match="BIOBENCH_PROBE_THREADS"):
        threads.choose(1.0, default=1)


def test_limited_restores():
    old = torch.get_num_threads()
    with threads.limited(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with pytest.raises(RuntimeError), threads.limited(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == old


def _data(n=600, d=64, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, :k] > 0).astype(np.int64), rng.integers(0, 7, n)


def test_thread_count_does_not_change_results():
    """One thread and two give the same predictions and (to float tolerance) probabilities, as the policy assumes."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, ym, yc = _data()
        cfg = mlp.MlpConfig(hidden=32, epochs=3, batch_size=64)
        a, b = mlp.fit_predict(x, ym, x[:100], seed=1, cfg=cfg, threads=1), mlp.fit_predict(x, ym, x[:100], seed=1, cfg=cfg, threads=2)
        assert np.array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
        lcfg = linear.LinearConfig(steps=30, batch_size=128)
        a, b = (
            linear.fit_predict(x, yc, x[:100], seed=1, cfg=lcfg, threads=1),
            linear.fit_predict(x, yc, x[:100], seed=1, cfg=lcfg, threads=2),
        )
        assert np.array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
        assert torch.get_num_threads() == 2  # restored after each probe
    finally:
        torch.set_num_threads(old)
