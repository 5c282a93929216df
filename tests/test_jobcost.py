"""Slurm job sizing: measured or default costs, packing small jobs, time limits, shard jobs for large tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biobench import config, jobcost
from biobench.config import Experiment, Model
from biobench.errors import ConfigError
from biobench.executors import Job, ShardJob, size_jobs
from biobench.store import ExperimentKey


def row(task, org, ckpt, *, seconds_embed=None, n_embedded=0, device="cpu", fit=None, score=None, fp=None, t=0.0):
    cfg = {"embedding": {"n_embedded": n_embedded}, "settings": {"device": device}}
    return {"task": task, "model_org": org, "model_ckpt": ckpt, "config": json.dumps(cfg), "seconds_embed": seconds_embed,
            "seconds_fit": fit, "seconds_score": score, "backbone_fingerprint": fp, "posix_time": t}  # fmt: skip


def test_measured_costs_come_from_stored_experiments_that_embedded_images():
    rows = [
        row("newt", "a", "x", seconds_embed=30.0, n_embedded=100, fit=4.0, score=1.0),
        row("plankton", "a", "x", seconds_embed=10.0, n_embedded=100, fit=2.0, score=0.0),
        row("plankton", "a", "x", seconds_embed=0.0, n_embedded=0, fit=4.0, score=0.0),  # features from memory: no rate
        row("newt", "a", "x", seconds_embed=5.0, n_embedded=10, device="cuda:1"),
    ]
    m = jobcost.measured(rows)
    assert m.s_per_image == {("a", "x", "cpu"): pytest.approx(40.0 / 200), ("a", "x", "cuda"): pytest.approx(0.5)}
    assert m.probe_s == {"newt": pytest.approx(5.0), "plankton": pytest.approx(3.0)}
    assert jobcost.s_per_image(m, "a", "x", "cpu") == pytest.approx(0.2)
    # Never measured: the default by device and size, larger backbones slower, the CPU slower than a GPU.
    b, l_, g = (jobcost.default_s_per_image(c, "cuda") for c in ("ViT-B-16/openai", "ViT-L-14/laion2b_s32b_b82k", "ViT-g-14/x"))
    assert b < l_ < g
    assert jobcost.s_per_image(m, "a", "ViT-B-16/openai", "cpu") == pytest.approx(b * jobcost.CPU_FACTOR)
    assert jobcost.job_seconds(m, "a", "x", "newt", "cpu", 50, 3) == pytest.approx(50 * 0.2 + 3 * 5.0)
    assert jobcost.job_seconds(m, "a", "x", "unmeasured", "cpu", 0, 2) == pytest.approx(2 * jobcost.DEFAULT_PROBE_S)


def test_small_jobs_are_packed_in_plan_order_up_to_the_target():
    load = jobcost.LOAD_S
    seconds = [100.0, 200.0, 2000.0, 50.0, 50.0, 400.0]
    models = ["a", "a", "b", "c", "c", "d"]
    # [a, a]: 100 + 200 + one load; b alone exceeds the target; [c, c] then d would need a second load: 200 + 2 loads + 400 > 600.
    assert jobcost.pack(seconds, models, 600.0) == [[0, 1], [2], [3, 4], [5]]
    assert jobcost.pack(seconds, models, 0.0) == [[i] for i in range(6)]
    assert jobcost.pack(seconds, models, 1e9) == [list(range(6))]
    assert jobcost.group_seconds([100.0, 200.0], ["a", "a"]) == pytest.approx(300 + load)


def test_time_limits_are_the_estimate_with_a_margin_clamped_to_the_floor_and_the_maximum():
    assert jobcost.time_limit(100.0, 2.0, 10, 30) == 10  # 200 s -> 5 min, raised to the floor
    assert jobcost.time_limit(400.0, 2.0, 10, 30) == 15  # 800 s -> 13.3 min, rounded up to 15
    assert jobcost.time_limit(1000.0, 2.0, 10, 30) == 30  # 33.3 min, capped at time_min
    assert jobcost.time_limit(100.0, 2.0, 10, 5) == 5  # a floor above the maximum gives the maximum
    assert jobcost.n_shards(10, 4) == 3 and jobcost.n_shards(3, 4) == 1


class Images:
    """An image set of `n` images none of which is cached (what `cached_mask` reads: keys and length)."""

    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def keys(self, mode="stat") -> np.ndarray:
        return np.array([f"{self.name}-{i}".encode().ljust(32, b"_")[:32] for i in range(self.n)], dtype="S32")


class Ex:
    def __init__(self, images):
        self.images = images


def job(model: Model, task: str, n_train=(4, 8)) -> Job:
    exps = tuple(Experiment(model, n) for n in n_train)
    keys = tuple(ExperimentKey(task, model.org, model.key_ckpt, model.method, n, 0, "p") for n in n_train)
    return Job(model, task, exps, keys)


def test_jobs_are_sized_from_measured_costs_and_large_tasks_get_shard_jobs(config_file, tmp_path):
    body = 'device = "cpu"\n[slurm]\ntarget_job_min = 2\nmin_time_min = 5\ntime_min = 60\ntime_safety = 1.5\nshard_images = 1000\n'
    cfg = config.load(config_file(body + '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n'))
    a, b = Model("timm", "vit_small_patch16_224"), Model("open-clip", "ViT-B-16/openai")
    rows = [row("newt", "timm", a.key_ckpt, seconds_embed=20.0, n_embedded=1000, fit=10.0, score=2.0)]  # a: 0.02 s/image
    examples = {"newt": Ex(Images("newt", 400)), "inat": Ex(Images("inat", 2500))}
    plan = size_jobs([job(a, "newt"), job(b, "newt"), job(a, "inat")], cfg, rows, examples)
    # inat (2500 images to embed > 1000): 3 shards of 834, 833, 833 images at a's measured 0.02 s/image, then its evaluation.
    shards = [s for s in plan.now if isinstance(s.units[0], ShardJob)]
    assert [(s.units[0].shard, s.units[0].n_shards) for s in shards] == [(0, 3), (1, 3), (2, 3)]
    assert [s.seconds for s in shards] == pytest.approx(
        [834 * 0.02 + jobcost.LOAD_S, 833 * 0.02 + jobcost.LOAD_S, 833 * 0.02 + jobcost.LOAD_S]
    )
    assert [(j.task, j.model, names) for j, names in plan.after] == [("inat", a, frozenset(s.units[0].name for s in shards))]
    # a on newt: 400 x 0.02 + 2 x 12 s = 32 s; b on newt: 400 x the CPU default for a ViT-B + 2 x 12 s (newt's probe is measured).
    evals = [s for s in plan.now if not isinstance(s.units[0], ShardJob)]
    b_s = 400 * jobcost.default_s_per_image(b.ckpt, "cpu") + 24.0
    assert b_s + 32.0 + 2 * jobcost.LOAD_S > 120 > 32.0 + jobcost.LOAD_S  # too long together for 2 min: two jobs
    assert [[(u.model, u.task) for u in s.units] for s in evals] == [[(a, "newt")], [(b, "newt")]]
    assert [s.seconds for s in evals] == pytest.approx([32.0 + jobcost.LOAD_S, b_s + jobcost.LOAD_S])
    assert [s.time_min for s in evals] == [jobcost.time_limit(s.seconds, 1.5, 5, 60) for s in evals]
    assert evals[0].time_min == 5 and evals[1].time_min == 5 * int(np.ceil((b_s + jobcost.LOAD_S) * 1.5 / 300))
    # With a 10-minute target they share one job (one load per model).
    packed = size_jobs([job(a, "newt"), job(b, "newt")], dataclasses_replace_target(cfg, 10), rows, examples).now
    assert [[(u.model, u.task) for u in s.units] for s in packed] == [[(a, "newt"), (b, "newt")]]
    assert packed[0].seconds == pytest.approx(32.0 + b_s + 2 * jobcost.LOAD_S)
    # The same inputs, the same plan.
    assert size_jobs([job(a, "newt"), job(b, "newt"), job(a, "inat")], cfg, rows, examples) == plan


def dataclasses_replace_target(cfg, minutes: int):
    import dataclasses

    slurm = dataclasses.replace(cfg.settings.slurm, target_job_min=minutes)
    return dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, slurm=slurm))


def test_sizing_settings_are_checked(config_file):
    model = '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n'
    for bad, msg in (("time_safety = 0.5", "time_safety' must be at least 1"), ("shard_images = 0", "shard_images' must be at least 1"),
                     ("target_job_min = -1", "target_job_min' must be 0 or more")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            config.load(config_file(f"[slurm]\n{bad}\n{model}"))


def test_cached_images_are_found_without_loading_the_model(config_file, tmp_path):
    from biobench.cache import FeatureCache
    from biobench.embed import _cache_key
    from biobench.executors import cached_mask

    cfg = config.load(config_file(f'device = "cpu"\ncache_dir = "{tmp_path / "fc"}"\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n'))
    images = Images("set", 10)
    model = Model("timm", "some-net")
    assert not cached_mask(model, images, cfg, {}).any()  # an empty cache
    cache = FeatureCache(cfg.settings.resolved_cache_dir())
    fp = _cache_key("weights-digest", "cpu", "exact")
    info = {"name": "timm:some-net", "org": "timm", "ckpt": "some-net"}
    cache.put(fp, images.keys()[[1, 4, 7]], np.ones((3, 2), np.float32), dataset="set", backbone_info=info)
    want = np.isin(np.arange(10), [1, 4, 7])
    # No stored experiment of the model: the cache's record of its backbones (by name) says where to look.
    np.testing.assert_array_equal(cached_mask(model, images, cfg, {}), want)
    assert not cached_mask(Model("timm", "some-net", pretrained=False), images, cfg, {}).any()  # other weights
    # With a stored fingerprint, the cache key is computed from it.
    np.testing.assert_array_equal(cached_mask(model, images, cfg, {("timm", "some-net"): "weights-digest"}), want)
    assert not cached_mask(model, images, cfg, {("timm", "some-net"): "other-digest"}).any()
