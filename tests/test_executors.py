"""Executors: pool and slurm-shaped (submitit's local executor) runs store what a local run stores, once each.

Jobs never write the database: they leave pickled reports in their outboxes and the
launcher ingests them. Killing a job mid-way loses only that job's unfinished experiments,
and the rerun runs exactly those.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from biobench import config, runner
from biobench.errors import ConfigError
from biobench.store import Store
from tests.conftest import run_cli

PLUGINS = [Path(__file__).with_name("plugin_backbones.py"), Path(__file__).with_name("plugin_gated.py")]


@pytest.fixture(scope="module")
def plankton_dir(tmp_path_factory) -> Path:
    from biobench.tasks import get_task

    d = tmp_path_factory.mktemp("plankton")
    get_task("plankton").fixture(d, seed=0)
    return d


def grid_config(config_file, newt_dir, plankton_dir, *, extra: str = "", models=("builtin:pixel-stats", "counting:v1"), name="c.toml"):
    tables = "\n".join(f'[[models]]\norg = "{m.split(":")[0]}"\nckpt = "{m.split(":")[1]}"\n' for m in models)
    plugins = ", ".join(f'"{p}"' for p in PLUGINS)
    return config_file(
        f"""
device = "cpu"
n_workers = 0
n_jobs = 1
n_bootstrap = 50
n_train = [4, 8]
plugins = [{plugins}]
{extra}

{tables}

[data]
newt = "{newt_dir}"
plankton = "{plankton_dir}"
""",
        name=name,
    )


def stored_scores(db: Path) -> dict[tuple, float]:
    with Store(db, readonly=True) as store:
        return {(r["task"], r["model_org"], r["model_ckpt"], r["n_train"], r["seed"]): r["score"] for r in store.rows()}


def check_db(db: Path, n: int) -> None:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == n
    # No experiment twice, and every prediction belongs to a stored experiment.
    assert (
        conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT task, model_org, model_ckpt, n_train, seed FROM experiments)").fetchone()[0]
        == n
    )
    assert conn.execute("SELECT COUNT(*) FROM predictions WHERE experiment_id NOT IN (SELECT id FROM experiments)").fetchone()[0] == 0
    conn.close()


def test_executor_settings_are_checked_with_their_keys(config_file, newt_dir, plankton_dir):
    cfg = config.load(
        grid_config(
            config_file,
            newt_dir,
            plankton_dir,
            extra='executor = "slurm"\n[slurm]\npartition = "gpu"\ntime_min = 90\nextra = ["mail-type=FAIL"]',
        )
    )
    assert cfg.settings.executor == "slurm" and cfg.settings.slurm.partition == "gpu" and cfg.settings.slurm.time_min == 90
    assert cfg.settings.slurm.additional_parameters() == {"mail_type": "FAIL"}
    with pytest.raises(ConfigError, match=r"executor.*'local', 'pool', 'slurm'"):
        config.load(grid_config(config_file, newt_dir, plankton_dir, extra='executor = "cluster"'))
    with pytest.raises(ConfigError, match=r"c.toml:\d+: unknown key \[slurm\] partiton \(did you mean 'partition'\?\)"):
        config.load(grid_config(config_file, newt_dir, plankton_dir, extra='[slurm]\npartiton = "gpu"'))
    with pytest.raises(ConfigError, match=r"\[slurm\] time_min' must be at least 1"):
        config.load(grid_config(config_file, newt_dir, plankton_dir, extra="[slurm]\ntime_min = 0"))
    with pytest.raises(ConfigError, match=r"\[slurm\] extra.*key=value"):
        config.load(grid_config(config_file, newt_dir, plankton_dir, extra='[slurm]\nextra = ["nice"]'))
    with pytest.raises(ConfigError, match="--detach needs executor"):
        runner.run(config.load(grid_config(config_file, newt_dir, plankton_dir)), detach=True)


def test_pool_with_two_cpu_workers_stores_the_scores_of_a_local_run(config_file, newt_dir, plankton_dir, tmp_path):
    local = config.load(grid_config(config_file, newt_dir, plankton_dir, extra='report_to = "local"', name="local.toml"))
    pool = config.load(
        grid_config(config_file, newt_dir, plankton_dir, extra='report_to = "pool"\nexecutor = "pool"\npool_size = 2', name="pool.toml")
    )
    a = runner.run(local)
    b = runner.run(pool)
    assert a.run == b.run == 8 and not b.failed, b.errors
    assert stored_scores(tmp_path / "pool" / "results.sqlite") == stored_scores(tmp_path / "local" / "results.sqlite")
    check_db(tmp_path / "pool" / "results.sqlite", 8)
    assert not list((tmp_path / "pool" / "jobs" / "outbox").rglob("*.report"))  # every result ingested
    assert runner.run(pool).run == 0  # a rerun is a no-op


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_tree(pid: int) -> None:
    for child in _children(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find a job's processes")
def test_slurm_path_kill_a_job_mid_run_and_the_rerun_does_only_what_is_missing(config_file, newt_dir, plankton_dir, tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("BIOBENCH_TEST_GATE", str(gate))
    extra = 'executor = "slurm"\n[slurm]\ncluster = "local"\npoll_s = 0.3\ntime_min = 5\ntarget_job_min = 0'
    cfg = config.load(grid_config(config_file, newt_dir, plankton_dir, extra=extra, models=("builtin:pixel-stats", "gated:v1")))
    db = cfg.settings.db_path

    first = runner.run(cfg, detach=True)  # 2 models x 2 tasks: 4 jobs of 2 experiments each, submitted at once
    assert first.detached and first.jobs_submitted == 4 and first.run == 0
    with Store(db, readonly=True) as store:
        jobs = store.jobs()
    assert len(jobs) == 4 and all(j["state"] == "queued" and j["cluster"] == "local" for j in jobs)
    gated = [j for j in jobs if "gated" in j["name"]]
    victim = next(j for j in gated if j["name"].startswith("newt"))
    # Wait for the victim to be held at the gate (its job process running), then kill it and everything under it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _children(int(victim["job_id"])):
        time.sleep(0.2)
    time.sleep(1.0)
    kill_tree(int(victim["job_id"]))
    gate.unlink()  # the other gated job goes on

    out = run_cli("status", "--db", str(db), timeout=60)
    assert out.returncode == 0, out.stderr
    assert victim["job_id"] in out.stdout and "failed" in out.stdout

    second = runner.run(cfg)  # reattaches to the 3 live jobs, resubmits the killed one's experiments
    assert not second.failed, second.errors
    assert second.jobs_submitted == 1
    assert second.run == 8  # nothing was stored before: 3 jobs' results collected, the killed job's 2 run again
    check_db(db, 8)
    with Store(db, readonly=True) as store:
        states = {j["name"]: j for j in store.jobs()}
    assert states[victim["name"]]["state"] in ("failed", "done")
    assert runner.run(cfg).run == 0
    check_db(db, 8)


def test_job_progress_is_a_line_per_state_change_off_a_terminal_and_one_live_line_on_it(caplog):
    import io
    import logging

    from biobench.executors import JobBoard

    changes = [("a", "1_0", "queued"), ("b", "1_1", "queued"), ("a", "1_0", "running"), ("a", "1_0", "running"),
               ("b", "1_1", "running"), ("a", "1_0", "done"), ("b", "1_1", "failed")]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="biobench.runner"):
        board = JobBoard(4, tty=False)
        for change in changes:
            board.change(*change)
        board.add_stored(2)
        board.close()
    lines = [r.getMessage() for r in caplog.records]
    # Submissions are logged when submitted; a repeated state is not a change.
    assert lines == ["Job 1_0 (a): running", "Job 1_1 (b): running", "Job 1_0 (a): done", "Job 1_1 (b): failed"]
    assert board.jobs_line() == "jobs: 0 queued, 0 running, 1 done, 1 failed"

    caplog.clear()
    screen = io.StringIO()
    with caplog.at_level(logging.INFO, logger="biobench.runner"):
        board = JobBoard(4, tty=True, file=screen)
        shown = []
        for change in changes:
            board.change(*change)
            shown.append(board.jobs_line())
        board.add_stored(2)
        board.close()
    assert not caplog.records  # no line per change: the live line says it
    text = screen.getvalue()
    assert shown[2] == "jobs: 1 queued, 1 running, 0 done, 0 failed" and shown[2] in text
    assert text.rstrip().split("\r")[-1].startswith("experiments:  50%") and "2/4" in text and shown[-1] in text


def test_a_large_task_is_embedded_by_shard_jobs_first_and_its_evaluation_job_embeds_nothing(
    config_file, newt_dir, plankton_dir, tmp_path, monkeypatch
):
    import io
    import json

    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import get_features
    from biobench.plugins import load_plugins
    from biobench.routes import embed_settings
    from biobench.tasks import get_task

    counts = tmp_path / "forward-passes"
    monkeypatch.setenv("BIOBENCH_TEST_COUNT_FILE", str(counts))
    only_plankton = ""  # newt = "": no data, so plankton is the grid's one task
    plain = config.load(grid_config(config_file, only_plankton, plankton_dir, models=("counting:v1",), name="plain.toml"))
    images = get_task("plankton").read(plain.task_options_for("plankton")).images
    n = len(images)
    extra = f'executor = "slurm"\n[slurm]\ncluster = "local"\npoll_s = 0.3\ntime_min = 5\nshard_images = {n - 1}'
    cfg = config.load(grid_config(config_file, only_plankton, plankton_dir, extra=extra, models=("counting:v1",)))

    out = io.StringIO()
    runner.run(cfg, dry_run=True, out=out)  # more images than shard_images: 2 shard jobs, then the evaluation job
    assert "embedding shard 1/2" in out.getvalue() and "embedding shard 2/2" in out.getvalue(), out.getvalue()
    assert "then, after its 2 shard job(s): plankton with counting:v1 (2 experiment(s))" in out.getvalue(), out.getvalue()
    assert not counts.exists()

    first = runner.run(cfg, detach=True)  # submits the shard jobs only
    assert first.detached and first.jobs_submitted == 2 and first.run == 0
    # Reattaches to the shard jobs (nothing submitted again), submits the evaluation job once they have ended.
    second = runner.run(cfg)
    assert not second.failed, second.errors
    assert second.run == 2 and second.jobs_submitted == 1
    with Store(cfg.settings.db_path, readonly=True) as store:
        jobs = {j["name"]: j for j in store.jobs()}
        embedded = [json.loads(r["config"])["embedding"]["n_embedded"] for r in store.rows()]
    assert sorted(name.split("--")[0] for name in jobs) == ["plankton", "shard1of2", "shard2of2"]
    assert all(j["state"] == "done" for j in jobs.values())
    assert len({j["job_id"] for j in jobs.values()}) == 3
    # Every image went through the backbone once, in the shard jobs; the evaluation job found them all cached.
    assert sum(int(x) for x in counts.read_text().split()) == n
    assert embedded == [0, 0]
    check_db(cfg.settings.db_path, 2)

    # The shards' cache entries are the unsharded features, and complete: a lookup embeds nothing.
    monkeypatch.delenv("BIOBENCH_TEST_COUNT_FILE")
    load_plugins(cfg.settings.plugins, cfg.source.parent)
    backbone = load_vision_backbone("counting", "v1")
    sharded = get_features(backbone, images, FeatureCache(cfg.settings.resolved_cache_dir()), embed_settings(cfg))
    whole = get_features(backbone, images, FeatureCache(tmp_path / "unsharded"), embed_settings(cfg))
    assert sharded.n_embedded == 0 and whole.n_embedded == n
    np.testing.assert_array_equal(np.asarray(sharded.features), np.asarray(whole.features))

    again = runner.run(cfg)
    assert again.run == 0 and again.jobs_submitted == 0
    check_db(cfg.settings.db_path, 2)
