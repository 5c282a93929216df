"""A real Slurm runs the training: `biobench train sbatch --submit`'s script (torchrun, 2 CPU processes, gloo, under
srun), requeued once; and the submitit route of `biobench train submit`.

The single-node cluster of tests/slurm_cluster.py (Debian's slurm-wlm and munge). The job is held mid-run
(its training processes stopped right after a checkpoint), gets USR1 on its batch shell, as Slurm sends it
`--signal=B:USR1@GRACE` before the time limit, and requeues itself through the script's trap; the requeued
job resumes from that checkpoint and finishes. Its losses and final weights equal (1e-6) those of an
uninterrupted run of the same 2 processes under a local torchrun. Skips where the daemons cannot start.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import biobench
from biobench import cli
from biobench.train.fixture import make_tol_shards
from biobench.train.loop import TrainConfig, train
from biobench.train.slurm import SlurmLaunch, submit
from tests.slurm_cluster import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS, EVERY = 16, 4


def job_info(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    out = cluster.run("scontrol", "show", "job", job_id).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_processes(job_id: str) -> list[int]:
    """This job's training processes (torchrun's agent and workers, not srun): SLURM_JOB_ID in their environment, this
    interpreter running biobench.cli in their command line."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SLURM_JOB_ID={job_id}".encode() in env.read_bytes().split(b"\0"):
                argv = (env.parent / "cmdline").read_bytes().split(b"\0")
                if argv[0] == sys.executable.encode() and b"biobench.cli" in argv:
                    pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


def checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["step"]
    except (OSError, EOFError, RuntimeError):  # not there yet
        return 0


def test_sbatch_job_requeued_by_usr1_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path, monkeypatch, capsys, request):
    cluster = slurm_cluster
    # sbatch passes this environment on: the job runs this interpreter (the script's default) on this biobench
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    src = str(Path(biobench.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))

    assert cli.main(["fixture", "tol-shards", "--dir", str(tmp_path / "fx")]) == 0
    words = capsys.readouterr().out.split()
    shards, captions = words[words.index("shards") + 1], words[words.index("captions") + 1]
    run, ref = tmp_path / "run", tmp_path / "ref"
    flags = ["--shards", shards, "--captions", captions, "--per-device-batch", "4", "--steps", str(STEPS)]
    flags += ["--checkpoint-every", str(EVERY), "--warmup", "3", "--lr", "1e-3", "--shuffle-buffer", "32", "--threads", "1"]
    flags += ["--no-tensorboard"]
    argv = ["train", "sbatch", "--sbatch-out", str(tmp_path / "job.sh"), "--submit", *flags, "--out", str(run)]
    argv += ["--gpus-per-node", "0", "--procs-per-node", "2", "--cpus-per-node", "2", "--time", "10"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Submitted job" in out, out
    job_id = out.split()[-1]
    script = (tmp_path / "job.sh").read_text()
    assert "--gpus-per-node" not in script and f"{sys.executable} -m torch.distributed.run" in script.replace("'", "")

    # the reference, while the job runs: the same 2 processes under a local torchrun, uninterrupted
    local = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    reference = subprocess.Popen([*local, "-m", "biobench.cli", "train", "run", *flags, "--out", str(ref)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    request.addfinalizer(lambda: reference.poll() is None and (reference.kill(), reference.wait()))

    # hold the job just after a checkpoint short of the end, then USR1 to its batch shell (what --signal=B:USR1@ sends)
    ckpt = run / "checkpoints" / "latest.pt"
    cluster.wait_for("the job's first checkpoint", lambda: ckpt.is_file(), timeout=90, poll=0.05)
    held = job_processes(job_id)
    assert len(held) == 3, held  # torchrun's agent and its 2 workers
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    at = checkpoint_step(ckpt)
    assert EVERY <= at < STEPS, at
    sig = cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    assert sig.returncode == 0, sig.stderr
    cluster.wait_for("the job to requeue itself", lambda: job_info(cluster, job_id).get("Restarts") == "1", timeout=90, poll=0.05)
    cluster.wait_for("Slurm to end the held processes", lambda: not set(held) & set(job_processes(job_id)), timeout=30, poll=0.05)
    # Slurm makes a requeued job wait (Reason=BeginTime, about 2 minutes); here it may start at once
    state = cluster.wait_for("the requeued job to be back", lambda: job_info(cluster, job_id)["JobState"] in ("PENDING", "RUNNING", "COMPLETED") and job_info(cluster, job_id)["JobState"], timeout=90, poll=0.05)  # fmt: skip
    if state == "PENDING":
        now = cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        assert now.returncode == 0, now.stderr
    info = cluster.wait_for(
        "the requeued job to finish",
        lambda: (i := job_info(cluster, job_id))["JobState"] in ("COMPLETED", "FAILED") and i,
        timeout=90,
        poll=0.05,
    )
    logs = {p.suffix: p.read_text() for p in (run / "slurm").glob(f"*-{job_id}.*")}
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, logs)
    assert f"requeueing job {job_id}" in logs[".out"], logs
    assert f"at step {at} " in logs[".err"], logs[".err"][-3000:]  # the requeued run resumed from that checkpoint

    ref_out = reference.communicate(timeout=120)[0].decode(errors="replace")
    assert reference.returncode == 0, ref_out[-3000:]
    rows, want = ([json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()] for d in (run, ref))
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # the steps redone after the requeue logged once
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in want], abs=1e-6)
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    final, expected = (torch.load(d / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False) for d in (run, ref))
    assert final["step"] == expected["step"] == STEPS
    for k, v in expected["model"].items():
        torch.testing.assert_close(final["model"][k], v, atol=1e-6, rtol=0, msg=k)
    assert (run / "export" / "tax" / "open_clip_pytorch_model.bin").is_file()


def test_submitit_job_on_real_slurm_matches_one_process(slurm_cluster, tmp_path, monkeypatch):
    """`biobench train submit`'s route (submitit's SlurmExecutor: 2 tasks under srun, no torchrun; CPU, gloo) at
    per-device batch 4 = one in-process run at batch 8 (losses within 1e-4; the reduction order differs)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    src = str(Path(biobench.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))
    fx = make_tol_shards(tmp_path / "fx")
    common = dict(shards=fx["shards"], captions=fx["captions"], steps=6, warmup=3, lr=1e-3, shuffle_buffer=32, threads=1, tensorboard=False)
    job = submit(
        TrainConfig(out=tmp_path / "run", per_device_batch=4, **common),
        SlurmLaunch(gpus_per_node=0, procs_per_node=2, cpus_per_node=2, time="10"),
    )
    assert job.job_id in slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split()  # a real Slurm job
    one = train(TrainConfig(out=tmp_path / "one", per_device_batch=8, **common))  # while the job runs
    results = job.results()  # one per task; both ranks report the all-reduced losses
    assert len(results) == 2
    for summary in results:
        assert summary["losses"] == pytest.approx(one["losses"], abs=1e-4)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx(one["losses"], abs=1e-4)
    assert (tmp_path / "run" / "export" / "tax" / "open_clip_pytorch_model.bin").is_file()
