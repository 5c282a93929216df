"""biobench.train: shards + captions stream, dual-projector loss, loop (decrease, resume, accumulation, DDP), export."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from biobench.errors import DataError
from biobench.train import data as data_mod
from biobench.train import model as model_mod
from biobench.train.fixture import make_tol_shards
from biobench.train.loop import TrainConfig, train

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_tol_shards(tmp_path_factory.mktemp("tol"))


def cfg(fx, out, **kw) -> TrainConfig:
    base = dict(shards=fx["shards"], captions=fx["captions"], out=out, steps=50, per_device_batch=8, shuffle_buffer=32)
    return TrainConfig(**(base | dict(warmup=5, lr=1e-3, checkpoint_every=10, threads=1) | kw))


def params(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["model"]


def test_braceexpand():
    assert data_mod.braceexpand("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert data_mod.braceexpand("{a,b}/x{1..2}") == ["a/x1", "a/x2", "b/x1", "b/x2"]


def test_missing_shard_and_caption_table(fx, tmp_path):
    with pytest.raises(DataError, match="missing"):
        data_mod.expand_shards(str(tmp_path / "shard-{0..1}.tar"))
    with pytest.raises(DataError, match="does not exist"):
        data_mod.read_captions(tmp_path / "nope.parquet")
    (tmp_path / "bad.csv").write_text("id,text\n1,x\n")
    with pytest.raises(DataError, match="no column 'uuid'"):
        data_mod.read_captions(tmp_path / "bad.csv")


def test_stream_counts_skips_and_truncated_shard(fx, tmp_path):
    captions = data_mod.read_captions(fx["captions"])
    shards = data_mod.expand_shards(fx["shards"])
    blob = Path(shards[1]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(blob[: len(blob) // 2 + 100])  # truncated mid-member
    counts = data_mod.SkipCounts()
    scfg = data_mod.StreamConfig(shards + [str(tmp_path / "cut.tar")], shuffle_buffer=16)
    got = list(data_mod.stream(scfg, captions, 0, counts))
    assert counts.no_image == 1 and counts.corrupt_image == 1
    assert counts.missing_caption >= fx["n_uncaptioned"] and counts.bad_shard == 1
    assert len(got) == counts.kept and all(s.caption for s in got)
    # deterministic, order shuffled by epoch
    again = [s.key for s in data_mod.stream(scfg, captions, 0, data_mod.SkipCounts())]
    assert again == [s.key for s in got]
    assert again != [s.key for s in data_mod.stream(scfg, captions, 1, data_mod.SkipCounts())]


def test_name_form_is_seeded_per_sample(fx):
    captions = data_mod.read_captions(fx["captions"])
    samples = list(data_mod.stream(data_mod.StreamConfig(data_mod.expand_shards(fx["shards"])), captions, 0, data_mod.SkipCounts()))
    picks = [data_mod.choose_name(s, 0, 0) for s in samples]
    assert picks == [data_mod.choose_name(s, 0, 0) for s in samples]
    forms = {next(f for f, t in s.names.items() if t == p) for s, p in zip(samples, picks)}
    assert forms == set(data_mod.NAME_FORMS)  # every form is drawn


def test_dual_loss_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    n, d = 6, 5
    out = {k: F.normalize(torch.randn(n, d, generator=g), dim=-1) for k in model_mod.FEATURE_KEYS}
    out |= {"scale_tax": torch.tensor(7.0), "scale_caption": torch.tensor(3.0)}
    got = model_mod.dual_loss(out, caption_weight=0.25)

    def clip(img, txt, s):
        logits = s * img @ txt.T
        return sum(-logits[i].log_softmax(0)[i] - logits[:, i].log_softmax(0)[i] for i in range(n)) / (2 * n)

    tax = clip(out["image_tax"], out["text_names"], 7.0)
    cap = clip(out["image_caption"], out["text_captions"], 3.0)
    torch.testing.assert_close(got["loss_tax"], tax)
    torch.testing.assert_close(got["loss_caption"], cap)
    torch.testing.assert_close(got["loss"], tax + 0.25 * cap)


@pytest.fixture(scope="module")
def runs(fx, tmp_path_factory):
    """Straight to 40 (of a 50-step schedule); 20 -> stop -> resume to 40; the straight run resumed to 50."""
    root = tmp_path_factory.mktemp("runs")
    straight = train(cfg(fx, root / "straight", stop_after=40))
    p40 = params(root / "straight")
    first = train(cfg(fx, root / "resumed", stop_after=20))
    second = train(cfg(fx, root / "resumed", stop_after=40, resume=True))
    final = train(cfg(fx, root / "straight", resume=True))
    return dict(root=root, straight=straight, p40=p40, first=first, second=second, final=final)


def test_loss_decreases_over_50_steps(runs):
    losses = runs["straight"]["losses"] + runs["final"]["losses"]
    assert len(losses) == 50
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    rows = [json.loads(ln) for ln in (runs["root"] / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 51))
    assert rows[-1]["skipped"]["corrupt_image"] >= 1 and rows[-1]["skipped"]["missing_caption"] >= 1


def test_resume_equals_straight(runs):
    assert runs["first"]["losses"] + runs["second"]["losses"] == pytest.approx(runs["straight"]["losses"], abs=1e-6)
    resumed = params(runs["root"] / "resumed")
    for k, v in runs["p40"].items():
        torch.testing.assert_close(resumed[k], v, atol=1e-6, rtol=0)


def test_export_loads_in_open_clip_and_biobench(runs):
    import open_clip
    from PIL import Image

    from biobench.backbones import load_vision_backbone

    tax = Path(runs["final"]["export"]["tax"])
    blob = torch.load(runs["root"] / "straight" / "checkpoints" / "latest.pt", weights_only=False)
    dual, *_ = model_mod.build(model_mod.TINY)
    dual.load_state_dict(blob["model"])
    dual.eval()
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tax}")
    clip.eval()
    bb = load_vision_backbone("open-clip", f"local-dir:{tax}")
    bb.eval()
    x = preprocess(Image.new("RGB", (40, 30), (200, 20, 20)))[None]
    with torch.no_grad():
        want = dual.clip.visual(x) @ dual.proj_tax
        torch.testing.assert_close(clip.encode_image(x), want)
        torch.testing.assert_close(bb.img_encode(x).img_features, want)
        assert bb.txt_encode(["red thrush"]).shape == (1, 32)
    cap = Path(runs["final"]["export"]["caption"])
    clip_cap, _, _ = open_clip.create_model_and_transforms(f"local-dir:{cap}")
    torch.testing.assert_close(clip_cap.state_dict()["visual.proj"], dual.proj_caption.detach())


def test_accumulation_equals_big_batch(fx, tmp_path):
    big = train(cfg(fx, tmp_path / "big", steps=4, per_device_batch=8, accum=1))
    acc = train(cfg(fx, tmp_path / "acc", steps=4, per_device_batch=4, accum=2))
    assert acc["losses"] == pytest.approx(big["losses"], abs=1e-5)
    a, b = params(tmp_path / "acc"), params(tmp_path / "big")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)  # Adam amplifies summation-order noise on near-zero grads


def test_too_few_samples_is_a_data_error(fx, tmp_path):
    with pytest.raises(DataError, match="too few usable samples"):
        train(cfg(fx, tmp_path / "x", steps=2, per_device_batch=1000))


def test_damaged_tar_never_fatal(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        info = tarfile.TarInfo("k1.sci.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "b.tar").write_bytes(b"this is no tar at all" * 30)
    counts = data_mod.SkipCounts()
    raws = [r for p in ("a.tar", "b.tar") for r in data_mod.read_tar(str(tmp_path / p), counts)]
    assert [r["__key__"] for r in raws] == ["k1"] and counts.bad_shard == 1


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(fx, tmp_path):
    """torchrun --nproc_per_node 2 (gloo), per-device batch 4, against one process with batch 8: losses within 1e-4."""
    one = train(cfg(fx, tmp_path / "one", steps=6, per_device_batch=8))
    env = os.environ | {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    args = ["--shards", fx["shards"], "--captions", str(fx["captions"]), "--out", str(tmp_path / "two"), "--steps", "6"]
    args += ["--per-device-batch", "4", "--shuffle-buffer", "32", "--warmup", "5", "--lr", "1e-3", "--threads", "1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731"]
    subprocess.run(cmd + ["-m", "biobench.cli", "train", "run", *args], env=env, check=True, timeout=300)
    rows = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx(one["losses"], abs=1e-4)


def test_local_dir_checkpoint_is_pinned_by_its_files(runs):
    from biobench.weights import TAG, weights_tag

    tag = weights_tag(f"local-dir:{runs['final']['export']['tax']}")
    assert tag.startswith(TAG) and tag != weights_tag(f"local-dir:{runs['final']['export']['caption']}")


@pytest.mark.slow
def test_zero_shot_rises_above_untrained(fx, runs, tmp_path):
    """`biobench run` with method = "zero-shot" on the nabirds fixture (same coloured taxa): trained beats untrained."""
    import sqlite3

    from biobench import config as config_mod
    from biobench import runner
    from biobench.tasks import get_task

    untrained = train(cfg(fx, tmp_path / "untrained", steps=0))["export"]["tax"]
    get_task("nabirds").fixture(tmp_path / "nabirds", seed=0, shuffle_labels=False)
    models = "".join(
        f'[[models]]\norg = "open-clip"\nckpt = "local-dir:{d}"\nmethod = "zero-shot"\n'
        for d in (runs["final"]["export"]["tax"], untrained)
    )
    (tmp_path / "zs.toml").write_text(f'report_to = "{tmp_path / "res"}"\n{models}[data]\nnabirds = "{tmp_path / "nabirds"}"\n')
    summary = runner.run(config_mod.load(tmp_path / "zs.toml"))
    assert not summary.failed
    with sqlite3.connect(tmp_path / "res" / "results.sqlite") as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(experiments)")]
        rows = db.execute("SELECT * FROM experiments").fetchall()
    score = {r[cols.index("model_ckpt")].split("#")[0]: r[cols.index("score")] for r in rows}
    assert score[f"local-dir:{runs['final']['export']['tax']}"] > score[f"local-dir:{untrained}"] + 0.3
