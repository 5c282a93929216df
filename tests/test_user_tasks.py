"""Your own dataset as a task, no code: `[tasks.NAME]` tables (`biobench.tasks.user`) and `biobench tasks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biobench import cli, config, metrics, plan, report
from biobench import tasks as registry
from biobench.errors import ConfigError, DataError
from biobench.probes import __all__ as probe_names
from biobench.store import Store
from biobench.tasks import get_task, user
from tests.test_task_layer import NO_HEAVY

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _forget_declared_tasks():
    """Declared tasks live in the process's registry; drop this test's, so other tests see only theirs."""
    registry.task_names()
    before, declared = dict(registry._REGISTRY), dict(user._DECLARED)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    user._DECLARED.clear()
    user._DECLARED.update(declared)


HEADER = 'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 200\nmodels = [{org = "builtin", ckpt = "pixel-stats"}]\n'

# One table per layout, each with non-default names so the fixture and reader must follow the table.
LAYOUTS = {
    "folders": {"layout": "folders", "splits": {"test": "val"}, "probe": "ridge", "metric": "accuracy"},
    "csv": {"layout": "csv", "csv": "meta/labels.tsv", "images": "pics", "separator": "\t",
            "columns": {"file": "path", "label": "species", "split": "subset"},
            "splits": {"train": ["train", "val"], "test": "test"}, "probe": "logistic", "metric": "macro-f1"},
    "coco": {"layout": "coco", "splits": {"train": "annotations/train.json", "test": "annotations/test.json"},
             "images": {"train": "images/train", "test": "images/test"}, "crop": True, "probe": "simpleshot",
             "metric": "mean-per-class-accuracy"},
}  # fmt: skip
REID = {"layout": "coco", "json": "whales.json", "images": "photos", "probe": "knn", "probe_options": {"metric": "euclidean"}}


def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def table_text(name: str, table: dict) -> str:
    return f"[tasks.{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()) + "\n"


def write_fixture(name: str, table: dict, root: Path, *, shuffle: bool = False) -> None:
    user.declare(name, table, root)
    get_task(name).fixture(root, seed=0, shuffle_labels=shuffle)


def run_and_load(tmp_path: Path, body: str) -> dict:
    cfg = tmp_path / "config.toml"
    cfg.write_text(HEADER + f'cache_dir = "{tmp_path / "cache"}"\n' + body)
    assert cli.main(["run", str(cfg)]) == 0
    db = tmp_path / "results" / "results.sqlite"
    with Store(db) as store:
        return {row["task"]: (row, store.predictions(row["id"])) for row in report.load(db)}


def chance(name: str, preds: list, n: int = 200) -> float:
    """The metric of these predictions permuted across test examples."""
    metric = get_task(name).metric
    y, pred = np.array([i["label"] for _, _, i in preds]), np.array([i["pred"] for _, _, i in preds])
    rng = np.random.default_rng(0)
    return float(
        np.mean([metrics.point(metric, y, p, metric.example_score(y, p)) for p in (pred[rng.permutation(len(pred))] for _ in range(n))])
    )


@pytest.mark.parametrize("layout", [*LAYOUTS, "reid"])
def test_each_layout_runs_end_to_end_above_chance_and_shuffled_near_it(tmp_path, layout):
    table = REID if layout == "reid" else LAYOUTS[layout]
    write_fixture("mybirds", table, tmp_path / "real")
    write_fixture("mybirds_shuffled", table, tmp_path / "shuffled", shuffle=True)
    body = table_text("mybirds", {**table, "data": "real"}) + table_text("mybirds_shuffled", {**table, "data": "shuffled"})
    rows = run_and_load(tmp_path, body)
    assert set(rows) == {"mybirds", "mybirds_shuffled"}
    (good, good_preds), (bad, bad_preds) = rows["mybirds"], rows["mybirds_shuffled"]
    spec = get_task("mybirds")
    assert good["metric"] == spec.metric.name and good["model"] == "builtin:pixel-stats"
    assert good["protocol"] == f"mybirds/v1#{user.declared('mybirds').definition}"
    assert good["score"] > chance("mybirds", good_preds) + 0.2 and good["ci_low"] > chance("mybirds", good_preds), good
    assert abs(bad["score"] - chance("mybirds_shuffled", bad_preds)) < max(0.2, bad["ci_high"] - bad["ci_low"]), bad
    assert spec.kind == ("re-identification" if layout == "reid" else "classification")
    assert spec.uses_n_train == (layout != "reid")


def test_dry_run_and_report_show_the_declared_task(tmp_path, capsys):
    write_fixture("mybirds", LAYOUTS["folders"], tmp_path / "d")
    cfg = tmp_path / "c.toml"
    cfg.write_text(HEADER + f'cache_dir = "{tmp_path / "cache"}"\nn_train = [2, -1]\n\n' + table_text("mybirds", LAYOUTS["folders"])
                   + '[data]\nmybirds = "d"\n')  # fmt: skip
    assert cli.main(["run", str(cfg), "--dry-run"]) == 0
    assert "dry run: 2 would run" in capsys.readouterr().out
    assert cli.main(["run", str(cfg)]) == 0
    assert cli.main(["report", "--db", str(tmp_path / "results" / "results.sqlite")]) == 0
    assert "mybirds" in capsys.readouterr().out


def keys(tmp_path: Path, *tables: dict, name: str = "mybirds") -> list:
    (tmp_path / "d").mkdir(exist_ok=True)
    out = []
    for t in tables:
        cfg = config.from_dict(
            {"models": [{"org": "builtin", "ckpt": "pixel-stats"}], "tasks": {name: {**t, "data": str(tmp_path / "d")}}},
            source=tmp_path / "c.toml",
        )
        (planned,) = plan.plan(cfg)
        out.append(planned.key)
    return out


def test_two_tables_with_different_probes_never_share_a_key(tmp_path):
    base = {"layout": "folders"}
    ridge, knn, knn5, same, bumped = keys(
        tmp_path, base, {**base, "probe": "knn"}, {**base, "probe": "knn", "probe_options": {"k": 5}},
        {**base, "probe": "ridge", "metric": "accuracy", "splits": {"train": "train", "test": "test"}, "citation": "me"},
        {**base, "version": 2},
    )  # fmt: skip
    assert len({ridge.protocol, knn.protocol, knn5.protocol, bumped.protocol}) == 4
    assert same == ridge  # defaults spelled out (and a citation) mean the same protocol, so results are reused
    assert ridge.protocol.startswith("mybirds/v1#") and bumped.protocol.startswith("mybirds/v2#")
    # The protocol id does not depend on the process (it is stored and compared across runs).
    code = "from biobench.tasks import user; print(user.parse('mybirds', {'layout': 'folders', 'probe': 'knn'}, __import__('pathlib').Path('.')).definition)"
    assert (
        knn.protocol
        == "mybirds/v1#" + subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )


BAD_TABLES = [
    ({"probe": "ridgee"}, "probe = \"ridgee\": unknown probe (did you mean 'ridge'?); known: ridge, logistic, simpleshot, knn, svm"),
    ({"metric": "f1"}, 'metric = "f1": unknown metric'),
    ({"split": {"test": "val"}}, "[tasks.mybirds] split: unknown key (did you mean 'splits'?)"),
    ({"csv": "labels.csv"}, '[tasks.mybirds] csv = "labels.csv": unknown key'),
    ({"splits": {"val": "val"}}, "[tasks.mybirds] splits.val: unknown split"),
    ({"probe_options": {"k": 5}}, "[tasks.mybirds] probe_options.k: not an option of probe 'ridge'"),
    ({"probe": "knn", "probe_options": {"k": "five"}}, "[tasks.mybirds] probe_options.k: must be an integer; got 'five'"),
    ({"probe_options": {"class_weight": "even"}}, 'probe_options.class_weight: must be "balanced"'),
    ({"version": 0}, "[tasks.mybirds] version = 0: must be 1 or more"),
    ({"kind": "counting"}, 'kind = "counting": unknown kind'),
    ({"layout": "parquet"}, 'layout = "parquet": unknown layout; known: folders, csv, coco'),
    ({"layout": "coco", "json": "a.json", "splits": {"train": "t.json"}}, "[tasks.mybirds] splits: give either splits"),
    ({"layout": "coco", "json": "a.json", "probe": "ridge"}, 'probe = "ridge": unknown probe; known: knn, exemplar-svm'),
    ({"layout": "csv", "columns": {"path": "file"}}, "[tasks.mybirds] columns.path: unknown"),
    ({"layout": "csv", "splits": {"train": "a", "test": ["a", "b"]}}, "'a' is both a train and a test value"),
]


@pytest.mark.parametrize(("change", "message"), BAD_TABLES)
def test_a_bad_table_names_the_table_the_key_and_the_line(tmp_path, change, message):
    (tmp_path / "d").mkdir()
    table = {k: v for k, v in {"layout": "folders", "data": "d", **change}.items()}
    path = tmp_path / "c.toml"
    path.write_text(HEADER + table_text("mybirds", table))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    text = str(info.value)
    assert message in text, text
    assert f"{path}:" in text and text.split(":")[1].strip().isdigit(), text  # file:line


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (table_text("mybirds", {"layout": "folders", "data": "nowhere"}), "[tasks.mybirds] data: directory"),
        (table_text("mybirds", {"layout": "folders"}), "[tasks.mybirds] has no data; give data = DIR in it, or mybirds = DIR under [data]"),
        (table_text("newt", {"layout": "folders", "data": "d"}), "'newt' is already a task"),
        (table_text("my.birds", {"layout": "folders", "data": "d"}).replace("[tasks.my.birds]", '[tasks."my.birds"]'), "a task name is"),
        (
            table_text("mybirds", {"layout": "folders", "data": "d"}) + "[mybirds]\nprobe = 'knn'\n",
            "[mybirds] and [tasks.mybirds] are both given",
        ),
        ("tasks = ['mybirds']\n", "'tasks' holds one table per task"),
        (table_text("mybirds", {"data": "d"}), "[tasks.mybirds] layout: missing; give layout ="),
    ],
)
def test_config_level_mistakes_name_the_table(tmp_path, body, message):
    (tmp_path / "d").mkdir()
    path = tmp_path / "c.toml"
    path.write_text(HEADER + body)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value) and str(path) in str(info.value), str(info.value)


def test_data_under_data_wins_and_empty_skips(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    raw = {"models": [{"org": "builtin", "ckpt": "pixel-stats"}], "tasks": {"mybirds": {"layout": "folders", "data": "a"}}}
    assert config.from_dict(raw, source=tmp_path / "c.toml").data["mybirds"] == tmp_path / "a"
    assert config.from_dict({**raw, "data": {"mybirds": "b"}}, source=tmp_path / "c.toml").data["mybirds"] == tmp_path / "b"
    assert "mybirds" not in config.from_dict({**raw, "data": {"mybirds": ""}}, source=tmp_path / "c.toml").data


def test_missing_files_name_the_key_that_points_at_them(tmp_path):
    user.declare("mybirds", {"layout": "folders", "splits": {"test": "val"}}, tmp_path)
    spec = get_task("mybirds")
    spec.fixture(tmp_path)
    (tmp_path / "val").rename(tmp_path / "test")
    with pytest.raises(DataError, match=r"\[tasks.mybirds\] splits.test = 'val': folder .*val not found"):
        spec.read(spec.options(data=tmp_path))
    user.declare("mybirds", {"layout": "csv"}, tmp_path)
    with pytest.raises(DataError, match=r"\[tasks.mybirds\] csv = 'labels.csv': file .*labels.csv not found"):
        get_task("mybirds").read(spec.options(data=tmp_path))
    with pytest.raises(DataError, match="data directory"):
        get_task("mybirds").read(spec.options(data=tmp_path / "absent"))


def test_shared_reader_checks_reach_declared_tasks(tmp_path):
    """An empty class folder, a CSV row whose image is missing, an annotation without a category or sharing an
    image without crop: each a DataError, none a skip."""
    user.declare("f", {"layout": "folders"}, tmp_path)
    get_task("f").fixture(tmp_path / "f")
    (tmp_path / "f" / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        get_task("f").read(user.Options(tmp_path / "f"))

    user.declare("c", {"layout": "csv"}, tmp_path)
    get_task("c").fixture(tmp_path / "c")
    next((tmp_path / "c" / "train").iterdir()).unlink()
    with pytest.raises(DataError, match="1 of 52 images listed in .*labels.csv are missing"):
        get_task("c").read(user.Options(tmp_path / "c"))

    table = {"layout": "coco", "splits": {"train": "train.json", "test": "test.json"}}
    user.declare("o", table, tmp_path)
    get_task("o").fixture(tmp_path / "o")
    doc = json.loads((tmp_path / "o" / "test.json").read_text())
    del doc["annotations"][0]["category_id"]
    (tmp_path / "o" / "test.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="annotation 32 has no 'category_id'"):
        get_task("o").read(user.Options(tmp_path / "o"))
    doc["annotations"][0]["category_id"] = 0
    doc["annotations"].append({**doc["annotations"][1], "id": 999})
    (tmp_path / "o" / "test.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="annotations 33 and 999 are on one image .*set crop = true"):
        get_task("o").read(user.Options(tmp_path / "o"))


def test_listing_tasks_with_a_config_shows_kind_probe_metric_and_data_without_torch(tmp_path):
    (tmp_path / "birds").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        table_text("mybirds", {"layout": "folders", "data": "birds", "probe": "knn", "metric": "macro-f1"})
        + table_text("whales", {"layout": "coco", "json": "w.json"})
        + '[data]\nnewt = "elsewhere/newt"\nages = ""\nwhales = "birds"\n'
    )
    out = subprocess.run(
        [sys.executable, "-c", NO_HEAVY, "tasks", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])},
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert lines["task"].split()[:6] == ["task", "kind", "probe", "metric", "routes", "data"]
    assert lines["mybirds"].split()[1:5] == ["classification", "knn", "macro_f1", "[probe]"]
    assert f"found: {tmp_path / 'birds'}" in lines["mybirds"] and "Your own dataset" in lines["mybirds"]
    assert lines["whales"].split()[1:4] == ["re-identification", "knn-loo", "top1"]
    assert f"not found: {tmp_path / 'elsewhere' / 'newt'}" in lines["newt"] and "[probe, mllm]" in lines["newt"]
    assert "skipped" in lines["ages"] and "not found: data/plankton" in lines["plankton"]
    assert lines["beluga"].split()[1:4] == ["re-identification", "knn-loo", "top1"]
    assert lines["hybrids"].split()[2:4] == ["hybrid-detector", "challenge_score"]


def test_every_probe_has_a_short_name():
    import biobench.probes as probes

    classes = [
        getattr(probes, n) for n in probe_names if isinstance(getattr(probes, n), type) and issubclass(getattr(probes, n), probes.Probe)
    ]
    names = [c.display_name() for c in classes if c is not probes.Probe]
    assert len(names) == len(set(names)) and all(n and n == n.lower() and " " not in n for n in names)
    assert set(user.PROBES) == {"ridge", "logistic", "simpleshot", "knn", "svm"}


def test_fixture_command_writes_a_declared_tasks_layout(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(table_text("mymoths", {"layout": "csv", "csv": "meta.csv", "columns": {"label": "species"}}))
    assert cli.main(["fixture", "mymoths", "--dir", str(tmp_path / "d"), "--config", str(cfg)]) == 0
    assert (tmp_path / "d" / "meta.csv").read_text().startswith("file,species,split\n")
    assert len(get_task("mymoths").read(user.Options(tmp_path / "d")).images) == 52


def test_the_tasks_of_a_config_built_in_code_reach_workers(tmp_path, monkeypatch):
    """A config from `config.from_dict` has no file for a pool or Slurm worker to read: its `[tasks.NAME]` tables travel
    with it. A fresh interpreter (as a spawned or submitit worker is), elsewhere, given the pickled config as a worker
    is, knows the task and reads its data."""
    import pickle

    write_fixture("mybirds", LAYOUTS["folders"], tmp_path / "d")
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the working directory, as from_dict documents
    table = {**LAYOUTS["folders"], "data": "d"}
    cfg = config.from_dict({"models": [{"org": "builtin", "ckpt": "pixel-stats"}], "tasks": {"mybirds": table}})
    assert cfg.source is None and cfg.user_tasks == {"mybirds": table} and cfg.base == tmp_path
    (tmp_path / "cfg.pickle").write_bytes(pickle.dumps(cfg))
    (tmp_path / "elsewhere").mkdir()
    code = (
        "import pickle, sys; from biobench import executors; from biobench.tasks import get_task; "
        "cfg = pickle.load(open(sys.argv[1], 'rb')); executors._setup_worker(cfg); "
        "ex = get_task('mybirds').read(cfg.task_options_for('mybirds')); print(get_task('mybirds').probe.display_name(), ex.table.height)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.pickle")], capture_output=True, text=True, env=env,
                         cwd=tmp_path / "elsewhere", timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    expected = get_task("mybirds").read(cfg.task_options_for("mybirds"))
    assert out.stdout.split() == [get_task("mybirds").probe.display_name(), str(expected.table.height)]
