"""The shared task layer: specs and the registry, plugins, the probe contract, pooling, metrics, imports."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from biobench import metrics, preprocess, probes, stats
from biobench.errors import ConfigError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.tasks import TaskSpec, get_task
from tests.conftest import run_cli

PLUGIN = Path(__file__).with_name("plugin_tasks.py")
SRC = Path(__file__).resolve().parents[1] / "src" / "biobench"


def test_a_plugin_file_registers_a_task_a_config_runs_end_to_end(tmp_path):
    # The fixture is written in another process, so this one's registry never holds the toy task.
    write = f"import runpy; runpy.run_path({str(PLUGIN)!r})['make_fixture']({str(tmp_path / 'toy')!r})"
    subprocess.run([sys.executable, "-c", write], check=True)
    config = tmp_path / "toy.toml"
    config.write_text(
        f'plugins = ["{PLUGIN}"]\ndevice = "cpu"\nn_workers = 0\nn_bootstrap = 100\nn_train = [-1, 3]\n\n'
        f'[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n\n[data]\ntoy = "{tmp_path / "toy"}"\n'
    )
    out = run_cli("run", str(config))
    assert out.returncode == 0, out.stderr
    assert "0 done, 2 run" in out.stdout
    table = run_cli("report", "--db", str(tmp_path / "results" / "results.sqlite"), "--format", "json")
    rows = json.loads(table.stdout)
    assert {r["task"] for r in rows} == {"toy"} and all(r["score"] > 0.8 for r in rows)
    # Without the plugin the same [data] name is an unknown task, named with its line.
    config.write_text(config.read_text().replace(f'plugins = ["{PLUGIN}"]\n', ""))
    bad = run_cli("run", str(config), "--dry-run")
    assert bad.returncode != 0 and "unknown task 'toy'" in bad.stderr and "toy.toml:" in bad.stderr


NO_HEAVY = """
import sys
from biobench import cli
code = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "sklearn", "litellm", "transformers") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [["tasks"], ["--help"], ["run", "--help"]])
def test_listing_tasks_and_help_import_neither_torch_nor_sklearn(argv):
    out = subprocess.run([sys.executable, "-c", NO_HEAVY + "\n", *argv], capture_output=True, text=True)
    if argv == ["tasks"]:
        assert "newt" in out.stdout and "[probe, mllm]" in out.stdout and "HEAVY []" in out.stdout, out.stderr
    else:  # tyro exits after printing help: check what was imported by then
        probe = NO_HEAVY.replace("code = cli.main(sys.argv[1:])", "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass")
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
        assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def _imports(path: Path) -> set[str]:
    """biobench modules `path` imports, at module level or inside functions."""
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("biobench")}


def test_module_dependencies_point_one_way():
    """No cycle among biobench's modules, counting imports inside functions too (a package is its __init__)."""
    files = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in SRC.rglob("*.py")}
    graph = {m: {d for d in _imports(p) if d in files and d != m} for m, p in files.items()}
    for m in list(graph):  # importing a.b runs a/__init__ first: an edge to a.b is also an edge to a
        graph[m] |= {".".join(d.split(".")[:k]) for d in graph[m] for k in range(2, len(d.split(".")))} - {m}
        graph[m] = {d for d in graph[m] if d in files and not m.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_store_and_config_stay_clear_of_the_mllm_client():
    assert "biobench.mllm.client" not in _imports(SRC / "store.py")
    assert not {m for m in _imports(SRC / "config.py") if m.startswith("biobench.mllm") and not m.startswith("biobench.mllm.settings")}


PROBE_CASES = [
    probes.Svm(), probes.Ridge(), probes.SimpleShot(), probes.Knn(k=3), probes.Logistic(),
    probes.HybridDetector("sgd"), probes.Mlp(epochs=20), probes.LeaveOneOutKnn(), probes.ExemplarSvm(n_iter=20),
]  # fmt: skip


@pytest.mark.parametrize("probe", PROBE_CASES, ids=lambda p: type(p).__name__)
def test_every_probe_keeps_the_one_contract(probe):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 5)) + 3.0 * y[:, None]
    if isinstance(probe, probes.Mlp):
        y = np.stack([y, 1 - y], axis=1)
    x_test = x if probe.leave_one_out else x + rng.normal(scale=0.1, size=x.shape)
    out = probe(x, y, x_test, seed=0, device="cpu")
    assert isinstance(out, probes.Predictions) and isinstance(out.params, dict)
    assert out.labels.shape == y.shape and np.mean(out.labels == y) > 0.8
    if out.scores is not None:
        assert len(out.scores) == len(y)


def test_leave_one_out_probes_refuse_a_different_test_set():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="leave-one-out"):
        probes.LeaveOneOutKnn()(x, np.arange(10) % 2, x + 1, seed=0)


def test_svm_small_data_fallback_is_one_option():
    rng = np.random.default_rng(0)
    y = np.array([0] * 4 + [1] * 8)
    x = rng.normal(size=(12, 4)) + y[:, None]
    linear = {"svc__kernel": "linear", "svc__C": 1.0}
    assert probes.Svm(min_train=10)(x, y, x, seed=0).params != linear  # 12 >= 10: the search runs
    assert probes.Svm(min_train=10, min_per_class=5)(x, y, x, seed=0).params == linear  # class 0 has 4 < 5
    assert probes.Svm(min_train=20)(x, y, x, seed=0).params == linear


def test_preprocessing_steps_are_named_and_fitted_on_training_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)) + 5, rng.normal(size=(4, 3))
    xa, xb = preprocess.apply(("centre",), a, b)
    assert np.allclose(xa.mean(0), 0) and np.allclose(xb, b - a.mean(0))
    xa, xb = preprocess.apply(("standardise",), a, b)
    assert np.allclose(xa.std(0), 1) and np.allclose(xb, (b - a.mean(0)) / a.std(0))
    xa, _ = preprocess.apply(("l2",), a, b)
    assert np.allclose(np.linalg.norm(xa, axis=1), 1)
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        preprocess.check(("l2", "whiten"), "Task t")


def _examples(pool=None) -> Examples:
    images = ImageSet("t", [f"i{k}" for k in range(6)], [Path(f"/x/{k}.jpg") for k in range(6)])
    table = pl.DataFrame({"id": ["a", "a", "b", "b", "c", "c"], "image": [0, 1, 2, 3, 4, 5], "label": [0, 0, 1, 1, 0, 0],
                          "split": ["train", "train", "test", "test", "test", "test"]})  # fmt: skip
    return Examples(images, table, pool=pool)


def test_pooling_combines_the_images_of_one_example():
    from biobench.routes.probe import pooled

    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    table, mean = pooled(_examples("mean"), x)
    assert table["id"].to_list() == ["a", "b", "c"] and np.allclose(mean, [[1, 2], [5, 6], [9, 10]])
    _, high = pooled(_examples("max"), x)
    assert np.allclose(high, [[2, 3], [6, 7], [10, 11]])
    with pytest.raises(Exception, match="appears 2 times"):
        _examples(None)  # without pooling, a repeated id is an error


def test_clustered_interval_matches_a_slow_cluster_bootstrap():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(30), rng.integers(1, 6, size=30))
    scores = (rng.random(len(clusters)) < 0.3 + 0.4 * (clusters % 2)).astype(float)
    fast = stats.cluster_mean_ci(scores, clusters, n_resamples=4000, seed=1)
    slow_rng = np.random.default_rng(2)
    members = [np.flatnonzero(clusters == c) for c in range(30)]
    reps = [scores[np.concatenate([members[c] for c in slow_rng.integers(0, 30, 30)])].mean() for _ in range(4000)]
    low, high = np.quantile(reps, [0.025, 0.975])
    assert fast.estimate == pytest.approx(scores.mean())
    assert fast.low == pytest.approx(low, abs=0.03) and fast.high == pytest.approx(high, abs=0.03)
    plain = stats.mean_ci(scores, n_resamples=4000, seed=1)
    assert fast.high - fast.low > plain.high - plain.low  # clusters that differ widen the interval


def test_summarize_gives_headline_interval_and_breakdowns():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    p = np.array([0, 1, 0, 0, 1, 1, 1, 1])
    s = metrics.summarize(metrics.ACCURACY, y, p, levels={"task": list("aabbccdd")}, level_meta={"task": {"a": {"n_train": 3}}},
                          n_bootstrap=200, seed=0)  # fmt: skip
    assert s.score == pytest.approx(0.75) and s.ci_low <= 0.75 <= s.ci_high
    assert s.sub_scores["task"]["a"] == {"accuracy": 1.0, "n_test": 2, "n_train": 3}
    assert s.sub_scores["task"]["c"]["accuracy"] == 0.5
    f1 = metrics.summarize(metrics.MACRO_F1, y, p, n_bootstrap=200, seed=0)
    import sklearn.metrics

    assert f1.score == pytest.approx(sklearn.metrics.f1_score(y, p, average="macro"))
    head = metrics.summarize(metrics.ACCURACY, y, p, headline=np.arange(8) >= 4, n_bootstrap=50)
    assert head.score == pytest.approx(0.75) and len(head.example_scores) == 8


def test_a_spec_is_checked_when_it_is_made():
    spec = get_task("newt")
    with pytest.raises(ValueError, match="unknown route"):
        dataclasses.replace(spec, routes=("probe", "text-retrieval"))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        dataclasses.replace(spec, preprocess=("l2", "pca"))
    with pytest.raises(ValueError, match="needs a probe"):
        dataclasses.replace(spec, probe=None)
    with pytest.raises(TypeError, match="data"):
        dataclasses.replace(spec, options=ImageSet)


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'newt'"):
        get_task("newtt")


def test_spec_declares_routes_instead_of_hasattr():
    assert get_task("newt").routes == ("probe", "mllm") and get_task("hybrids").routes == ("probe",)
    assert isinstance(get_task("ages"), TaskSpec)


def test_csv_examples_reader_names_the_line_of_each_problem(tmp_path):
    from biobench.errors import DataError
    from biobench.layouts.tables import read_examples

    (tmp_path / "img").mkdir()
    for f in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "img" / f).write_bytes(b"x")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label,split\na.jpg,wren,train\nb.jpg,robin,val\nc.jpg,finch,val\n")
    ex = read_examples("t", tmp_path, csv, tmp_path / "img", splits={"train": "train", "val": "test"})
    assert ex.classnames[""] == ("finch", "robin", "wren") and ex.table["label"].to_list() == [2, 1, 0]
    assert ex.table["split"].to_list() == ["train", "test", "test"] and ex.images.ids == ["a.jpg", "b.jpg", "c.jpg"]
    bad = {
        "file,label,split\na.jpg,wren,train\nb.jpg,robin,dev\n": r"labels.csv line 3: split must be train or val, got 'dev'",
        "file,label,split\na.jpg,,train\n": r"labels.csv line 2: label must be filled in",
        "file,label,split\nzzz.jpg,wren,train\n": r"(?s)1 of 1 images listed in .*labels.csv are missing.*line 2 \(zzz.jpg\)",
        "file,species,split\na.jpg,wren,train\n": r"labels.csv lacks column\(s\) 'label'",
    }
    for text, message in bad.items():
        csv.write_text(text)
        with pytest.raises(DataError, match=message):
            read_examples("t", tmp_path, csv, tmp_path / "img", splits={"train": "train", "val": "test"})


def test_a_task_without_n_train_runs_once_per_model_and_seed(tmp_path):
    from biobench import config, plan

    get_task("beluga").fixture(tmp_path / "beluga")
    cfg = config.from_dict(
        {
            "models": [{"org": "builtin", "ckpt": "pixel-stats"}],
            "n_train": [4, -1, 16],
            "seeds": [0, 1],
            "data": {"beluga": str(tmp_path / "beluga")},
        }
    )
    planned = plan.plan(cfg)
    assert sorted((p.key.seed, p.status) for p in planned) == [(0, "n/a"), (0, "n/a"), (0, "run"), (1, "n/a"), (1, "n/a"), (1, "run")]
    assert {p.key.n_train for p in planned} == {p.experiment.n_train for p in planned} == {-1}  # run (and keyed) at -1


@pytest.mark.parametrize("task", ["kabr", "beluga"])
def test_stored_predictions_keep_their_cluster_for_the_report(task, tmp_path):
    """The report resamples clusters (videos, individuals) from the stored info: the group must be there."""
    import biobench
    from biobench.tasks import get_task

    get_task(task).fixture(tmp_path / task, seed=0)
    report = biobench.evaluate("builtin:pixel-stats", task, tmp_path / task, device="cpu", n_workers=0, n_bootstrap=20)
    examples = get_task(task).read(get_task(task).options(data=tmp_path / task))
    groups = set(examples.table["group"].cast(str).to_list())
    assert all(str(info["group"]) in groups for info in report.example_info)
