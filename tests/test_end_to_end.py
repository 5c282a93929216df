"""Fixture -> run -> store -> report, through the real CLI where it matters."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biobench import config, report, runner
from tests.conftest import run_cli

PLUGIN = Path(__file__).with_name("plugin_backbones.py")


def newt_config(config_file, data: Path, *, models: str = 'org = "builtin"\nckpt = "pixel-stats"', extra: str = "", name="c.toml") -> Path:
    return config_file(
        f"""
        device = "cpu"
        n_workers = 0
        n_jobs = 2
        n_bootstrap = 200
        plugins = ["{PLUGIN}"]
        {extra}

        [[models]]
        {models}

        [data]
        newt = "{data}"
        """,
        name=name,
    )


def scores(db: Path) -> list[dict]:
    return json.loads(report.to_json(report.load(db)))


def test_pixel_stats_learns_the_fixture_and_not_shuffled_labels(config_file, newt_dir, newt_shuffled_dir, tmp_path):
    real = config.load(newt_config(config_file, newt_dir, extra='n_train = -1\nreport_to = "real"', name="real.toml"))
    shuffled = config.load(newt_config(config_file, newt_shuffled_dir, extra='n_train = -1\nreport_to = "shuf"', name="shuf.toml"))
    assert runner.run(real).run == 1 and runner.run(shuffled).run == 1
    (good,) = scores(tmp_path / "real" / "results.sqlite")
    (chance,) = scores(tmp_path / "shuf" / "results.sqlite")
    assert good["model"] == "builtin:pixel-stats" and good["task"] == "newt" and good["n_test"] == 140
    assert good["score"] > 0.8 and good["ci_low"] > 0.7
    assert abs(chance["score"] - 0.5) < 0.12 and chance["ci_low"] < 0.5 < chance["ci_high"] + 0.05


def count_images(path: Path) -> int:
    return sum(int(line) for line in path.read_text().split()) if path.exists() else 0


def test_rerun_is_a_no_op_and_new_n_train_reuses_features(config_file, newt_dir, tmp_path):
    counts = tmp_path / "forward-passes.txt"
    env = {"BIOBENCH_TEST_COUNT_FILE": str(counts)}
    models = 'org = "counting"\nckpt = "v1"'
    first = newt_config(config_file, newt_dir, models=models, extra="n_train = [4]\nseeds = [0, 1]", name="a.toml")
    out = run_cli("run", str(first), env=env)
    assert out.returncode == 0, out.stderr
    assert "0 done, 2 run" in out.stdout
    embedded = count_images(counts)
    assert embedded == 280  # every fixture image once, though two experiments used them

    out = run_cli("run", str(first), env=env)
    assert out.returncode == 0 and "2 done, 0 run" in out.stdout
    assert count_images(counts) == embedded

    wider = newt_config(config_file, newt_dir, models=models, extra="n_train = [4, 8]\nseeds = [0, 1]", name="a.toml")
    out = run_cli("run", str(wider), env=env)
    assert out.returncode == 0 and "2 done, 2 run" in out.stdout
    assert count_images(counts) == embedded  # only n_train changed: all features came from the cache
    rows = scores(tmp_path / "results" / "results.sqlite")
    assert sorted((r["n_train"], r["seed"]) for r in rows) == [(4, 0), (4, 1), (8, 0), (8, 1)]


def test_dry_run_says_why_things_are_skipped(config_file, newt_dir, tmp_path):
    models = 'org = "builtin"\nckpt = "pixel-stats"\n\n[[models]]\norg = "openai"\nckpt = "gpt-4o-mini"\nmethod = "mllm"'
    path = newt_config(config_file, newt_dir, models=models, extra="n_train = 4")
    out = run_cli("run", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(l.split()[0] == "run" and "builtin:pixel-stats" in l for l in lines)
    assert any(l.split()[0] == "run" and "openai:gpt-4o-mini (mllm)" in l and "|mllm-single" in l for l in lines)
    assert "2 would run" in out.stdout
    assert not (tmp_path / "results" / "results.sqlite").exists()  # a dry run writes nothing

    runner.run(config.load(newt_config(config_file, newt_dir, extra="n_train = 4", name="cv.toml")))  # same results dir
    out = run_cli("run", str(path), "--dry-run")
    assert any(l.split()[0] == "done" and "builtin:pixel-stats" in l for l in out.stdout.splitlines())

    no_data = config_file('[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n', name="nodata.toml")
    out = run_cli("run", str(no_data), "--dry-run")
    assert any(l.startswith("no data") and l.split("|")[0].split()[-1] == "newt" for l in out.stdout.splitlines())


def test_missing_data_dir_exits_non_zero_with_a_fix(config_file, tmp_path):
    path = config_file('[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewt = "not-here"\n')
    out = run_cli("run", str(path))
    assert out.returncode != 0
    assert "newt" in out.stderr and str(tmp_path / "not-here") in out.stderr
    assert "biobench download newt" in out.stderr and "biobench fixture newt" in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_toml_names_file_and_line(config_file):
    path = config_file('n_train = [4\n[[models]]\norg = "builtin"\n')
    out = run_cli("run", str(path))
    assert out.returncode != 0 and str(path) in out.stderr and "line 2" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_org_lists_known_ones(config_file, newt_dir):
    path = newt_config(config_file, newt_dir, models='org = "open_clip"\nckpt = "ViT-B-16/openai"')
    out = run_cli("run", str(path))
    assert out.returncode != 0
    assert "open_clip" in out.stderr and "Known orgs:" in out.stderr
    for org in ("builtin", "open-clip", "timm", "torchvision"):
        assert org in out.stderr
    assert "did you mean 'open-clip'" in out.stderr.lower()


def test_corrupt_image_names_the_file(config_file, newt_dir, tmp_path):
    import shutil

    data = tmp_path / "newt"
    shutil.copytree(newt_dir, data)
    victim = sorted((data / "newt2021_images").iterdir())[17]
    victim.write_bytes(b"\xff\xd8 not really a jpeg")
    out = run_cli("run", str(newt_config(config_file, data, extra="n_train = 4")))
    assert out.returncode == 1
    assert str(victim) in out.stderr and "Traceback" not in out.stderr


def test_report_formats(config_file, newt_dir, tmp_path):
    path = newt_config(config_file, newt_dir, extra="n_train = [4]\nseeds = [0, 1]")
    runner.run(config.load(path))
    db = tmp_path / "results" / "results.sqlite"
    out = run_cli("report", "--db", str(db), "--format", "json")
    rows = json.loads(out.stdout)
    assert len(rows) == 2 and all(set(r) == set(report.JSON_KEYS) for r in rows)
    assert {r["seed"] for r in rows} == {0, 1} and all(r["ci_low"] <= r["score"] <= r["ci_high"] for r in rows)
    csv_text = run_cli("report", "--db", str(db), "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("task,model,method,n_train,n_train_actual,seed")
    table = run_cli("report", "--db", str(db)).stdout
    assert "builtin:pixel-stats" in table and "95% CI" in table
    out = run_cli("report", "--db", str(db), "--format", "html", "--out", str(tmp_path / "r.html"))
    assert out.returncode == 0 and '<table id="leaderboard">' in (tmp_path / "r.html").read_text()
    missing = run_cli("report", "--db", str(tmp_path / "nope.sqlite"))
    assert missing.returncode == 1 and "biobench run" in missing.stderr


def test_sigint_leaves_a_consistent_database_and_the_rerun_finishes(config_file, newt_dir, tmp_path):
    path = newt_config(
        config_file,
        newt_dir,
        extra='n_train = [10, 12, 14, 16]\nseeds = [0, 1]\n[newt]\ntasks = ["ml_tag_nest", "ml_age_coopers_hawk"]',
    )
    db = tmp_path / "results" / "results.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "biobench", "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 1:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    assert 1 <= done < 8
    for exp_id, n_test in conn.execute("SELECT id, n_test FROM experiments"):
        assert conn.execute("SELECT COUNT(*) FROM predictions WHERE experiment_id = ?", (exp_id,)).fetchone()[0] == n_test
    assert conn.execute("SELECT COUNT(*) FROM predictions WHERE experiment_id NOT IN (SELECT id FROM experiments)").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0  # claims released
    conn.close()

    out = run_cli("run", str(path))
    assert out.returncode == 0, out.stderr
    assert f"{done} done, {8 - done} run" in out.stdout
    assert len(scores(db)) == 8


def test_python_api_with_a_backbone_instance(newt_dir, tmp_path):
    import biobench
    from biobench.backbones.builtin import PixelStats

    rep = biobench.evaluate(
        PixelStats(), "newt", newt_dir, n_train=4, seed=2, device="cpu", n_workers=0, n_bootstrap=100, db=tmp_path / "api.sqlite"
    )
    assert rep.key.model == "custom:PixelStats" and rep.key.n_train == 4 and rep.n_train_actual == 4
    assert 0.5 < rep.score <= 1 and rep.ci_low <= rep.score <= rep.ci_high
    assert rep.provenance["package_versions"]["torch"]
    assert scores(tmp_path / "api.sqlite")[0]["score"] == rep.score
    named = biobench.evaluate("builtin:pixel-stats", "newt", newt_dir, n_train=4, seed=2, device="cpu", n_workers=0, n_bootstrap=100)
    assert named.score == rep.score  # same features, same protocol


def test_demo_runs_offline_and_reuses_results(tmp_path):
    out_dir = tmp_path / "demo"
    start = time.time()
    out = run_cli("demo", "--out", str(out_dir), env={"HF_HUB_OFFLINE": "1"})
    elapsed = time.time() - start
    assert out.returncode == 0, out.stderr
    assert "0 done, 8 run" in out.stdout
    for model in ("builtin:pixel-stats", "builtin:random-vit"):
        assert model in out.stdout
    assert (out_dir / "results.sqlite").is_file() and '<table id="leaderboard"' in (out_dir / "report.html").read_text()
    assert len(scores(out_dir / "results.sqlite")) == 8
    again = run_cli("demo", "--out", str(out_dir))
    assert "8 done, 0 run" in again.stdout
    print(f"demo took {elapsed:.1f}s")


def test_fixture_and_cache_commands(tmp_path):
    out = run_cli("fixture", "newt", "--dir", str(tmp_path / "fx"), "--seed", "3")
    assert out.returncode == 0 and (tmp_path / "fx" / "newt2021_labels.csv").is_file()
    bad = run_cli("fixture", "newtt", "--dir", str(tmp_path / "fx2"))
    assert bad.returncode == 1 and "Did you mean 'newt'?" in bad.stderr and "Known tasks:" in bad.stderr
    import biobench

    biobench.evaluate("builtin:pixel-stats", "newt", tmp_path / "fx", n_train=4, device="cpu", n_workers=0, n_bootstrap=10)
    ls = run_cli("cache", "ls")
    assert "builtin:pixel-stats" in ls.stdout and "newt" in ls.stdout and "280" in ls.stdout
    assert run_cli("cache", "rm").returncode == 1
    rm = run_cli("cache", "rm", "--model", "builtin:pixel-stats")
    assert rm.returncode == 0 and "Freed" in rm.stdout
    assert "No cached features" in run_cli("cache", "ls").stdout
    assert os.environ["BIOBENCH_CACHE"].startswith(str(tmp_path))


def test_two_launchers_on_one_database_split_the_work(config_file, newt_dir, tmp_path):
    path = newt_config(config_file, newt_dir, extra='n_train = [10, 12, 14, 16]\nseeds = [0]\n[newt]\ntasks = ["ml_tag_nest"]')
    db = tmp_path / "results" / "results.sqlite"
    first = subprocess.Popen(
        [sys.executable, "-m", "biobench", "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    second = run_cli("run", str(path))
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "another run is working on it" in second.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 4  # each experiment exactly once
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_plugin_errors_name_the_plugin(config_file, newt_dir, tmp_path):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('boom in plugin')\n")
    for plugins, expected in (
        ('["missing_plugin.py"]', "not found"),
        (f'["{broken}"]', "boom in plugin"),
        ('["no.such.module"]', "no.such.module"),
    ):
        path = config_file(f'plugins = {plugins}\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewt = "{newt_dir}"\n')
        with pytest.raises(Exception) as info:
            runner.run(config.load(path))
        assert type(info.value).__name__ == "ConfigError" and expected in str(info.value)


def test_python_api_rejects_bad_arguments(newt_dir, tmp_path):
    import biobench

    with pytest.raises(biobench.ConfigError, match="biobench fixture newt"):
        biobench.evaluate("builtin:pixel-stats", "newt", tmp_path / "nowhere")
    with pytest.raises(biobench.ConfigError, match="batchsize"):
        biobench.evaluate("builtin:pixel-stats", "newt", newt_dir, batchsize=4)
    with pytest.raises(biobench.ConfigError, match="Unknown task"):
        biobench.evaluate("builtin:pixel-stats", "newtt", newt_dir)
    with pytest.raises(biobench.BackboneError, match="Known orgs"):
        biobench.evaluate("nope:x", "newt", newt_dir, device="cpu")
