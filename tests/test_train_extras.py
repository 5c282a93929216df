"""biobench.train, continued: evaluation at an interval, TensorBoard / W&B sinks, DataLoader workers, sbatch, pretrained file."""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from biobench.train import data as data_mod
from biobench.train import model as model_mod
from biobench.train.fixture import make_tol_shards
from biobench.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_tol_shards(tmp_path_factory.mktemp("tol"))


def cfg(fx, out, **kw) -> TrainConfig:
    base = dict(shards=fx["shards"], captions=fx["captions"], out=out, steps=30, per_device_batch=8, shuffle_buffer=32)
    return TrainConfig(**(base | dict(warmup=5, lr=1e-3, checkpoint_every=10, threads=1) | kw))


def _tokenize(texts) -> torch.Tensor:
    """A stand-in tokenizer (the data path only stacks what it returns): the first 24 characters' code points."""
    return torch.tensor([[ord(c) for c in t[:24].ljust(24)] for t in texts])


@functools.cache
def _transform_and_tokenizer():
    from torchvision import transforms

    # random crops and flips: the per-sample seeding is what makes workers agree with the main process
    tf = transforms.Compose([transforms.RandomResizedCrop(16), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    return tf, _tokenize


def _steps(fx, **kw) -> tuple[list[list[data_mod.Batch]], data_mod.SkipCounts]:
    tf, tok = _transform_and_tokenizer()
    scfg = data_mod.StreamConfig(data_mod.expand_shards(fx["shards"]), seed=3, shuffle_buffer=16)
    captions = data_mod.read_captions(fx["captions"])
    counts = data_mod.SkipCounts()
    got = list(data_mod.steps(scfg, captions, 1, per_device=4, accum=1, transform=tf, tokenizer=tok, counts=counts, **kw))
    return got, counts


def test_workers_give_the_same_epoch_as_no_workers(fx):
    """2 DataLoader workers: the same samples, in the same steps, with the same tensors and skip counts as 0 workers;
    under 2 ranks x 2 workers the ranks' batches partition each 1-rank step (no duplicate, no loss)."""
    zero, c0 = _steps(fx)
    two, c2 = _steps(fx, num_workers=2)
    assert {k for s in zero for b in s for k in b.keys} == {k for s in two for b in s for k in b.keys}
    assert [b.keys for s in two for b in s] == [b.keys for s in zero for b in s]
    assert c2.as_dict() == c0.as_dict() and c0.corrupt_image == 1 and c0.missing_caption >= 1
    for s0, s2 in zip(zero, two):
        torch.testing.assert_close(s2[0].images, s0[0].images, atol=0, rtol=0)
        assert torch.equal(s2[0].names, s0[0].names) and torch.equal(s2[0].captions, s0[0].captions)
    # 2 ranks x per_device 4 = groups of 8 samples: one-rank step k at per_device 8 = 0-worker steps 2k and 2k+1
    ranks = [[b.keys for s in _steps(fx, num_workers=2, rank=r, world=2)[0] for b in s] for r in range(2)]
    whole = [zero[2 * k][0].keys + zero[2 * k + 1][0].keys for k in range(len(zero) // 2)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) > 0
    for keys, a, b in zip(whole, *ranks):
        assert not set(a) & set(b) and a + b == keys


def test_resume_with_workers_is_exact(fx, tmp_path):
    """Stopping at 4 and resuming to 8 with 2 workers = 8 straight steps with none."""
    straight = train(cfg(fx, tmp_path / "s", steps=8, checkpoint_every=4))
    first = train(cfg(fx, tmp_path / "r", steps=8, stop_after=4, num_workers=2))
    second = train(cfg(fx, tmp_path / "r", steps=8, resume=True, num_workers=2))
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], abs=1e-6)
    a, b = (torch.load(tmp_path / d / "checkpoints" / "latest.pt", weights_only=False)["model"] for d in ("s", "r"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def evaluated(fx, tmp_path_factory):
    """20 steps with nabirds-fixture zero-shot evaluation every 10 (and at 0)."""
    from biobench.tasks import get_task

    root = tmp_path_factory.mktemp("eval")
    get_task("nabirds").fixture(root / "nabirds", seed=0, shuffle_labels=False)
    c = cfg(fx, root / "run", steps=20, eval_every=10, eval_tasks=(f"nabirds={root / 'nabirds'}",), eval_bootstrap=20)
    return root, train(c)


def test_eval_rows_at_the_interval_and_rising(evaluated):
    root, *_ = evaluated
    rows = [json.loads(ln) for ln in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    scores = [r["eval"]["nabirds"]["score"] for r in evals]
    assert scores[-1] > scores[0] + 0.3, scores  # 5 classes: untrained is near chance (0.2)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 21))


def test_eval_score_matches_biobench_run_on_the_export(evaluated, tmp_path):
    """The in-training evaluation of step 20 = `biobench run` (zero-shot) on RUN/eval/tax, the same weights."""
    import sqlite3

    from biobench import config as config_mod
    from biobench import runner

    root, *_ = evaluated
    rows = [json.loads(ln) for ln in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "eval" in r][-1]["eval"]["nabirds"]["score"]
    toml = f'report_to = "{tmp_path / "res"}"\n[[models]]\norg = "open-clip"\nckpt = "local-dir:{root / "run" / "eval" / "tax"}"\n'
    toml += f'method = "zero-shot"\n[data]\nnabirds = "{root / "nabirds"}"\n'
    (tmp_path / "zs.toml").write_text(toml)
    assert not runner.run(config_mod.load(tmp_path / "zs.toml")).failed
    with sqlite3.connect(tmp_path / "res" / "results.sqlite") as db:
        (score,) = db.execute("SELECT score FROM experiments").fetchone()
    assert score == pytest.approx(last, abs=1e-9)


def test_tensorboard_event_files(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, *_ = evaluated
    acc = EventAccumulator(str(root / "run" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "loss_tax", "lr", "skipped/corrupt_image", "eval/nabirds/score"} <= set(tags)
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 21))
    rows = [json.loads(ln) for ln in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    want = [r["loss"] for r in rows if "loss" in r]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx(want, rel=1e-6)  # event files hold float32
    assert [e.step for e in acc.Scalars("eval/nabirds/score")] == [0, 10, 20]


def test_wandb_when_installed(fx, tmp_path, monkeypatch):
    calls: list[tuple] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or object()
    fake.log = lambda data, step: calls.append(("log", dict(data), step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(cfg(fx, tmp_path / "w", steps=3, wandb_project="biocap-test", tensorboard=False))
    assert calls[0][0] == "init" and calls[0][1]["project"] == "biocap-test" and calls[0][1]["mode"] == "offline"
    assert calls[0][1]["config"]["steps"] == 3 and calls[0][1]["dir"] == str(tmp_path / "w")
    logs = [c for c in calls if c[0] == "log"]
    assert [c[2] for c in logs] == [1, 2, 3] and all("loss" in c[1] and "skipped/kept" in c[1] for c in logs)
    assert calls[-1] == ("finish",)
    assert not (tmp_path / "w" / "tensorboard").exists()


def test_wandb_asked_for_but_missing_is_an_error(fx, tmp_path, monkeypatch):
    from biobench.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match="pip install wandb"):
        train(cfg(fx, tmp_path / "w", steps=1, wandb_project="p"))


def test_starts_from_a_pretrained_weights_file(fx, tmp_path):
    """A local weights file as `pretrained` (open_clip loads a path): the trainer's model is exactly those weights."""
    import open_clip

    model_mod.register_tiny()
    torch.manual_seed(1234)  # not the trainer's seed: the weights must come from the file
    clip = open_clip.create_model(model_mod.TINY)
    want = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    torch.save(want, tmp_path / "tiny.pt")
    fresh = train(cfg(fx, tmp_path / "fresh", steps=0))
    start = train(cfg(fx, tmp_path / "pre", steps=0, pretrained=str(tmp_path / "tiny.pt")))
    got = torch.load(Path(start["export"]["tax"]) / "open_clip_pytorch_model.bin", weights_only=True)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    other = torch.load(Path(fresh["export"]["tax"]) / "open_clip_pytorch_model.bin", weights_only=True)
    assert not torch.equal(other["visual.proj"], want["visual.proj"])
    blob = torch.load(tmp_path / "pre" / "export" / "caption" / "open_clip_pytorch_model.bin", weights_only=True)
    assert torch.equal(blob["visual.proj"], want["visual.proj"])  # the caption head starts as a copy


def test_sbatch_script(fx, tmp_path):
    import tyro

    from biobench import cli
    from biobench.train.slurm import SlurmLaunch, sbatch_script

    c = cfg(fx, tmp_path / "run", steps=500, accum=4, forms=("sci", "taxon"), eval_every=100, eval_tasks=("nabirds=/d/nab",))
    launch = SlurmLaunch(nodes=4, gpus_per_node=8, cpus_per_node=64, time="12:00:00", partition="gpu", setup=("source /v/bin/activate",))
    text = sbatch_script(c, launch)
    assert text.startswith("#!/bin/bash\n")
    sb = dict(ln.removeprefix("#SBATCH --").partition("=")[::2] for ln in text.splitlines() if ln.startswith("#SBATCH"))
    assert sb["nodes"] == "4" and sb["ntasks-per-node"] == "1" and sb["gpus-per-node"] == "8" and sb["cpus-per-task"] == "64"
    assert sb["time"] == "12:00:00" and sb["partition"] == "gpu" and "requeue" in sb and sb["signal"].startswith("B:USR1@")
    assert sb["output"].startswith(str(tmp_path / "run" / "slurm")) and sb["open-mode"] == "append"  # requeue keeps logs
    lines = text.splitlines()
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in lines
    assert "trap requeue USR1" in lines and any("scontrol requeue" in ln for ln in lines)
    assert lines.index("source /v/bin/activate") < lines.index("trap requeue USR1")
    (srun,) = [ln for ln in lines if ln.startswith("srun ")]
    argv = shlex.split(srun.removesuffix(" &"))
    tr = argv[argv.index("torch.distributed.run") + 1 :]
    opt = {tr[i]: tr[i + 1] for i in range(0, tr.index("-m"), 2)}
    assert opt == {
        "--nnodes": "4",
        "--nproc_per_node": "8",
        "--rdzv_backend": "c10d",
        "--rdzv_id": "$SLURM_JOB_ID",
        "--rdzv_endpoint": "$MASTER_ADDR:$MASTER_PORT",
    }
    rest = tr[tr.index("-m") :]
    assert rest[:4] == ["-m", "biobench.cli", "train", "run"]
    parsed = tyro.cli(TrainConfig, args=rest[4:])  # the flags reproduce the config (plus --resume)
    assert parsed == TrainConfig(**{**c.__dict__, "resume": True})
    out = tmp_path / "job.sh"
    argv = ["train", "sbatch", "--sbatch-out", str(out), "--shards", fx["shards"], "--captions", str(fx["captions"])]
    argv += ["--out", str(tmp_path / "run2"), "--nodes", "2", "--gpus-per-node", "4"]
    assert cli.main(argv) == 0
    assert "#SBATCH --nodes=2" in out.read_text() and (tmp_path / "run2" / "slurm").is_dir()
    subprocess.run(["bash", "-n", str(out)], check=True)  # valid shell
    cpu = sbatch_script(c, SlurmLaunch(gpus_per_node=0, procs_per_node=3, cpus_per_node=6))  # CPU nodes: no GPU asked
    assert "--gpus-per-node" not in cpu and "--nproc_per_node 3 " in cpu and "OMP_NUM_THREADS=2" in cpu
    assert shlex.split([ln for ln in cpu.splitlines() if ln.startswith("srun ")][0])[3] == sys.executable


def test_submitit_slurm_parameters(tmp_path):
    """The submitit route's Slurm parameters make the sbatch script submitit would submit."""
    from submitit.slurm.slurm import _make_sbatch_string

    from biobench.train.slurm import SlurmLaunch, submitit_parameters

    params = submitit_parameters(SlurmLaunch(nodes=2, gpus_per_node=4, cpus_per_node=32, time="1-02:30:00", qos="high"))
    text = _make_sbatch_string(command="python -m x", folder=tmp_path, **params)
    sb = {ln.split()[1] for ln in text.splitlines() if ln.startswith("#SBATCH")}
    assert {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--time=1590", "--qos=high"} <= sb
    assert any(s.startswith("--signal=USR2@") for s in sb)  # submitit's pre-emption / time-out signal
    cpu = submitit_parameters(SlurmLaunch(gpus_per_node=0, procs_per_node=2, cpus_per_node=4))
    assert "gpus_per_node" not in cpu and cpu["ntasks_per_node"] == 2 and cpu["cpus_per_task"] == 2


@pytest.mark.slow  # two extra Python processes (submitit's LocalExecutor) importing torch and open_clip
def test_submitit_local_two_tasks_match_one_process(fx, tmp_path):
    """submitit's LocalExecutor, 2 tasks (gloo) at per-device batch 4 = one process at batch 8 (losses within 1e-4)."""
    from biobench.train.slurm import SlurmLaunch, submit

    one = train(cfg(fx, tmp_path / "one", steps=2))
    job = submit(cfg(fx, tmp_path / "two", steps=2, per_device_batch=4), SlurmLaunch(gpus_per_node=2, time="10"), cluster="local")
    results = job.results()  # one per task; both ranks report the all-reduced losses
    assert len(results) == 2
    for summary in results:
        assert summary["losses"] == pytest.approx(one["losses"], abs=1e-4)


def test_eval_options_are_checked_before_training(fx, tmp_path):
    from biobench.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_tasks is empty"):
        train(cfg(fx, tmp_path / "a", eval_every=5))
    with pytest.raises(ConfigError, match="no text route"):
        train(cfg(fx, tmp_path / "b", eval_every=5, eval_tasks=(f"newt={tmp_path}",)))
    with pytest.raises(ConfigError, match="not TASK=DATA_DIR"):
        train(cfg(fx, tmp_path / "c", eval_every=5, eval_tasks=("nabirds",)))
    with pytest.raises(ConfigError, match="does not exist"):
        train(cfg(fx, tmp_path / "d", eval_every=5, eval_tasks=(f"nabirds={tmp_path / 'nope'}",)))
