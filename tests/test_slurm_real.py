"""A real Slurm: a single-node cluster (Debian's slurm-wlm and munge) runs a grid through `executor = "slurm"`.

One job is `scancel`led while held mid-run (at its first forward pass); the rerun collects
the other jobs, submits exactly the cancelled job's experiments again, and stores every
experiment once. Where the daemons cannot start, the test skips and says why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import biobench
from biobench import cli, config, executors, runner
from biobench.store import Store
from tests.test_executors import check_db, grid_config, stored_scores

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def plankton_dir(tmp_path_factory) -> Path:
    from biobench.tasks import get_task

    d = tmp_path_factory.mktemp("plankton")
    get_task("plankton").fixture(d, seed=0)
    return d


def test_real_slurm_scancel_a_job_mid_run_and_the_rerun_submits_exactly_what_is_missing(
    slurm_cluster, config_file, plankton_dir, tmp_path, monkeypatch, capsys
):
    # The jobs run on this machine under this interpreter (submitit: sys.executable) and see this biobench.
    cluster = slurm_cluster
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    src = str(Path(biobench.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("BIOBENCH_TEST_GATE", str(gate))
    extra = 'executor = "slurm"\n[slurm]\ngpus_per_job = 0\ncpus_per_job = 1\nmem_gb = 1\ntime_min = 10\ntarget_job_min = 0\npoll_s = 0.5'
    cfg = config.load(grid_config(config_file, "", plankton_dir, extra=extra, models=("builtin:pixel-stats", "gated:v1")))
    db = cfg.settings.db_path

    first = runner.run(cfg, detach=True)  # 2 models x plankton (newt = ""): 2 jobs (one array) of 2 experiments (n_train 4, 8) each
    assert first.detached and first.jobs_submitted == 2 and first.run == 0
    with Store(db, readonly=True) as store:
        jobs = store.jobs()
    assert len(jobs) == 2 and all(j["cluster"] == "slurm" and j["state"] == "queued" for j in jobs)
    listed = cluster.run("squeue", "-h", "-r", "-o", "%i").stdout.split()
    assert sorted(listed) == sorted(j["job_id"] for j in jobs), listed  # the jobs really are Slurm's
    victim = next(j for j in jobs if "gated" in j["name"])
    marker = Path(f"{gate}.waiting.{victim['job_id']}")
    cluster.wait_for(f"job {victim['job_id']} to reach its first forward pass", marker.exists)
    cancel = cluster.run("scancel", victim["job_id"])
    assert cancel.returncode == 0, cancel.stderr
    cluster.wait_for(f"job {victim['job_id']} to be cancelled", lambda: executors.squeue_states([victim["job_id"]]) == {victim["job_id"]: "CANCELLED"})  # fmt: skip
    gate.unlink()
    # Cancelled before its first result: nothing of it in its outbox, nothing of it stored.
    assert not list((executors.jobs_folder(cfg) / "outbox" / victim["name"]).glob("*.report"))
    with Store(db, readonly=True) as store:
        assert not any(store.has(k) for k in victim["keys"])

    capsys.readouterr()
    assert cli.main(["status", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    line = next(ln for ln in shown.splitlines() if victim["job_id"] in ln)
    assert line.startswith("failed") and "0/2 stored" in line, shown
    assert "ended without a result" in shown, shown  # its error, with its log path

    second = runner.run(cfg)  # collects the other job, resubmits the cancelled job's 2 experiments as one job
    assert not second.failed, (second.errors, cluster.logs())
    assert second.jobs_submitted == 1 and second.done + second.run == 4  # done: stored from outboxes before planning
    check_db(db, 4)
    with Store(db, readonly=True) as store:
        jobs2 = {j["name"]: j for j in store.jobs()}
    again = jobs2[victim["name"]]  # the same work has the same name: exactly the cancelled job's experiments
    assert again["job_id"] != victim["job_id"] and again["keys"] == victim["keys"] and again["state"] == "done"
    assert all(j["state"] == "done" for j in jobs2.values())
    assert len(stored_scores(db)) == 4

    third = runner.run(cfg)  # nothing missing: nothing submitted, nothing stored
    assert third.run == 0 and third.jobs_submitted == 0
    check_db(db, 4)
