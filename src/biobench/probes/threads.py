"""How many intra-op threads a small CPU torch probe (MLP, linear head) trains with.

A probe step here is a few matrix products of a few hundred MFLOP. torch's default
intra-op pool (one thread per core) splits each product across all cores and waits for the
slowest; when other processes hold those cores (a shared machine, `--jobs` > 1, another
task's probe) a descheduled thread stalls every step, which made FishNet's MLP and the
linear probe up to ~35x slower than one thread (issue 15). On a quiet machine the extra
threads do help (~1.4x on 2 cores). So the policy is: no more threads than the problem size
can use (`MACS_PER_THREAD` multiply-adds per step per thread), no more than the cores that
are free now (cores this process may run on, minus other processes' runnable threads
now, from /proc/loadavg), never more than torch's own setting, at least one.

The thread count does not change the results here: the products split over rows, not over
the summed dimension (the benchmark `benchmarks/probe_threads.py` checks predictions and
probabilities between thread counts). `BIOBENCH_PROBE_THREADS=N` fixes the count.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

MACS_PER_THREAD = 20e6
"""Multiply-adds per optimiser step below which one more thread costs more in waiting than it saves."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _own_running() -> int:
    """This process's threads that are runnable now (Linux; 1 elsewhere: the caller)."""
    n = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except OSError:
        return 1
    return max(1, n)


def _load(samples: int = 5, interval_s: float = 0.01, loadavg: str = "/proc/loadavg") -> float:
    """Other processes' runnable threads now: the median of a few readings of /proc/loadavg's running count,
    less this process's own (which would otherwise count its own probe threads, still spinning, as load).
    Elsewhere the 1-minute load average, less one (this process)."""
    try:
        readings = []
        for i in range(samples):
            with open(loadavg) as f:
                running = int(f.read().split()[3].split("/")[0])
            readings.append(running - _own_running())
            if i + 1 < samples:
                time.sleep(interval_s)
        return float(max(0, sorted(readings)[len(readings) // 2]))
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            return 0.0


def choose(macs_per_step: float, *, default: int, cores: int | None = None, load: float | None = None) -> int:
    """The thread count for a probe whose optimiser step costs `macs_per_step` multiply-adds (forward).

    `default` is torch's current setting (the upper bound); `cores` defaults to this process's CPU
    affinity, `load` (other processes' runnable threads) to `_load()`.
    """
    env = os.environ.get("BIOBENCH_PROBE_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"BIOBENCH_PROBE_THREADS={env!r} is not an integer; set it to a thread count such as 1.") from None
    cores = _cores() if cores is None else cores
    load = _load() if load is None else load
    free = cores - int(load + 0.5)
    by_size = int(macs_per_step // MACS_PER_THREAD)
    return max(1, min(default, cores, free, by_size))


@contextlib.contextmanager
def limited(n: int) -> Iterator[int]:
    """Run the block with at most `n` torch intra-op threads; restore the setting afterwards. Yields the count used."""
    import torch

    old = torch.get_num_threads()
    n = max(1, min(n, old))
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != old:
            torch.set_num_threads(old)
