"""Results store: one transaction per experiment, skip-on-rerun keys, claims."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from biobench.errors import BiobenchError
from biobench.evaluation import TaskReport
from biobench.store import ExperimentKey, Report, Store


def key(**kw) -> ExperimentKey:
    base = dict(task="newt", model_org="builtin", model_ckpt="pixel-stats", method="cvml", n_train=4, seed=0, protocol="newt/v1")
    return ExperimentKey(**{**base, **kw})


def report(k: ExperimentKey, n: int = 5, info=None) -> Report:
    result = TaskReport(
        n_train_actual=4,
        metric="accuracy",
        score=0.6,
        ci_low=0.2,
        ci_high=0.9,
        example_ids=[f"img{i}" for i in range(n)],
        example_scores=np.array([1.0, 0.0, 1.0, 1.0, 0.0][:n]),
        example_info=info if info is not None else [{"task": "t", "label": np.int64(1)}] * n,
        sub_scores={"cluster": {"a": {"accuracy": np.float64(0.5)}}},
        seconds_fit=2.0,
        seconds_score=0.1,
    )
    return Report(
        key=k,
        result=result,
        config={"experiment": {"n_train": 4}},
        provenance={"argv": ["biobench"], "git_commit": "abc", "package_versions": {"torch": "x"}, "host": "h", "posix_time": 1.0},
        seconds_embed=1.0,
    )


def test_write_and_read_back(tmp_path):
    with Store(tmp_path / "r.sqlite") as store:
        assert store.write(report(key()))
        assert store.has(key()) and not store.has(key(seed=1))
        assert store.done_keys() == {key()}
        (row,) = store.rows()
        assert row["score"] == 0.6 and row["n_test"] == 5 and row["git_commit"] == "abc"
        assert json.loads(row["sub_scores"]) == {"cluster": {"a": {"accuracy": 0.5}}}
        preds = store.predictions(row["id"])
        assert [p[0] for p in preds] == [f"img{i}" for i in range(5)] and preds[0][2] == {"task": "t", "label": 1}
        assert not store.write(report(key()))  # already stored: skipped, not duplicated
        assert len(store.rows()) == 1


def test_failed_write_leaves_nothing(tmp_path):
    class Boom(dict):
        pass

    bad_info = [{"ok": 1}] * 3 + [{"bad": object()}] + [{"ok": 1}]
    with Store(tmp_path / "r.sqlite") as store:
        with pytest.raises(TypeError):
            store.write(report(key(), info=bad_info))
        assert store.rows() == []
        assert store.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
        assert store.write(report(key()))


def test_interrupt_mid_write_rolls_back(tmp_path):
    class Interrupting(list):
        def __iter__(self):
            for i, x in enumerate(super().__iter__()):
                if i == 3:
                    raise KeyboardInterrupt
                yield x

    with Store(tmp_path / "r.sqlite") as store:
        r = report(key())
        r = dataclasses.replace(r, result=dataclasses.replace(r.result, example_ids=Interrupting(r.example_ids)))
        with pytest.raises(KeyboardInterrupt):
            store.write(r)
        assert store.rows() == [] and store.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
    assert sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_claims(tmp_path):
    with Store(tmp_path / "r.sqlite") as store:
        a, b, c = key(seed=1), key(seed=2), key(seed=3)
        store.write(report(c))
        claimed, others = store.claim([a, b, c], "run-1")
        assert claimed == [a, b] and others == []  # c is done: neither claimed nor busy

        # a: held by a live process on this host; b: held by a process that has exited.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            store.conn.execute("UPDATE runs SET pid = ?, run_id = 'run-other' WHERE key = ?", (holder.pid, a.to_json()))
            store.conn.execute("UPDATE runs SET pid = ?, run_id = 'run-dead' WHERE key = ?", (dead.pid, b.to_json()))
            claimed, others = store.claim([a, b], "run-2")
            assert others == [a] and claimed == [b]
            # The same run (this process) re-claiming its own keys is fine.
            assert store.claim([b], "run-2") == ([b], [])
        finally:
            holder.kill()
            holder.wait()
        # The holder died: its claim is stale and can be taken over.
        claimed, others = store.claim([a], "run-3")
        assert claimed == [a] and others == []
        store.write(report(a))  # writing an experiment drops its claim
        store.release("run-3")
        store.release("run-2")
        assert store.claims() == []


def test_newer_schema_and_garbage_files_are_clear_errors(tmp_path):
    db = tmp_path / "r.sqlite"
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(BiobenchError, match="newer biobench"):
        Store(db)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(BiobenchError, match="not a usable"):
        Store(junk)


def test_claims_from_other_hosts_expire_by_heartbeat(tmp_path):
    import time

    from biobench import store as store_mod

    with Store(tmp_path / "r.sqlite") as store:
        a = key(seed=9)
        store.claim([a], "remote")
        store.conn.execute("UPDATE runs SET host = 'another-node', pid = 1 WHERE key = ?", (a.to_json(),))
        assert store.claim([a], "local") == ([], [a])
        old = time.time() - store_mod.STALE_CLAIM_S - 1
        store.conn.execute("UPDATE runs SET heartbeat = ? WHERE key = ?", (old, a.to_json()))
        assert store.claim([a], "local") == ([a], [])


def test_unwritable_results_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BiobenchError, match="report_to"):
        Store(blocker / "sub" / "results.sqlite")
