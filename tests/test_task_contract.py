"""The contract every registered task meets; a new task gets all of it by registering.

For each task: its fixture, run through `biobench run` with builtin:pixel-stats (text-only tasks:
builtin:colour-clip as a zero-shot model, the weight-free CLIP), scores
well above chance, and near chance once labels are shuffled (chance: the metric of the
same predictions permuted across test examples); its protocol id is the same in two
processes; its download, served by a local HTTP server on 127.0.0.1 from archives this
test packs out of the fixture, lays out a dataset `read` accepts; a missing dataset is an
error naming the task and the path.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import subprocess
import sys
import tarfile
import threading
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest

from biobench import cli, metrics, report
from biobench.download import md5sum
from biobench.errors import DataError
from biobench.store import Store
from biobench.tasks import get_task, task_names

TASKS = task_names()
SPECIAL_DOWNLOADS = {
    "hybrids": "its last step fetches every image its CSVs list from Zenodo; "
    "tests/test_challenge_hybrids.py::test_download_lays_out_the_task_and_checks_md5 serves those too",
    "imagenet": "gated on the Hugging Face Hub: its download prints the login steps (tests/test_task_imagenet.py)",
    "rarespecies": "fetched with the Hugging Face Hub's client: its download prints the steps (tests/test_task_rarespecies.py)",
    "ecdysis": "its metadata link is read from the collection's download page, then every image is fetched; "
    "tests/test_task_ecdysis.py::test_download_reads_the_page_link_and_fetches_every_image serves those",
    **{
        name: "a BioCLIP 2 zero-shot set behind a form or without a stable address: its download prints the steps "
        "(tests/test_text_route_tasks.py::test_sets_behind_a_form_or_without_an_address_print_the_steps_and_layout)"
        for name in __import__("biobench.tasks.clip_sets", fromlist=["SETS"]).SETS
        if name != "idle-oo-camera-traps"
    },
    "idle-oo-camera-traps": "its last step fetches every image its CSVs list from LILA with md5 "
    "(tests/test_text_route_tasks.py::test_camera_traps_download_fetches_the_csvs_then_every_image_with_md5)",
    **{
        name: "its last step fetches every image its CSV lists by URL with md5 (tests/test_task_bio_retrieval.py)"
        for name in ("cornell-bird-retrieval", "plantid-retrieval")
    },
    "inquire-rerank": "a public Hugging Face dataset: its download prints the steps (tests/test_task_inquire.py)",
    "birds525": "Kaggle needs a login: its download prints the steps and the layout "
    "(tests/test_task_birds525.py::test_download_prints_the_kaggle_steps_and_the_layout_or_accepts_files_in_place)",
}


def fast_options(name: str) -> dict:
    """Options that keep the fixture runs quick without changing what is tested."""
    fields = {f.name for f in dataclasses.fields(get_task(name).options)}
    return {k: v for k, v in {"epochs": 30, "steps": 500}.items() if k in fields}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every task's fixture and shuffled fixture, each run once through `biobench run`; rows by (kind, task)."""
    root = tmp_path_factory.mktemp("contract")
    out = {}
    for kind, shuffle in (("real", False), ("shuffled", True)):
        data = {}
        for name in TASKS:
            get_task(name).fixture(root / kind / name, seed=0, shuffle_labels=shuffle)
            data[name] = root / kind / name
        tables = "\n".join(
            f"[{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in fast_options(name).items())
            for name in TASKS
            if fast_options(name)
        )
        config = root / f"{kind}.toml"
        config.write_text(
            f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 200\nreport_to = "{root / kind / "results"}"\n'
            f'cache_dir = "{root / "cache"}"\n\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n\n'
            '[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n[data]\n'
            + "\n".join(f'{n} = "{d}"' for n, d in data.items())
            + f"\n\n{tables}\n"
        )
        assert cli.main(["run", str(config)]) == 0
        db = root / kind / "results" / "results.sqlite"
        with Store(db) as store:
            for row in report.load(db):
                if row["method"] == expected_method(row["task"]):
                    out[kind, row["task"]] = (row, store.predictions(row["id"]))
    return out


def expected_method(name: str) -> str:
    """The method whose run of the task the contract checks: the probe route where the task has it, else the text route."""
    return "cvml" if get_task(name).supports("probe") else "zero-shot"


def permutation_chance(name: str, predictions: list, seed: int = 0, n: int = 200) -> float:
    """The metric of these predictions shuffled across test examples (what unrelated predictions score)."""
    spec = get_task(name)
    infos = [info for _, _, info in predictions]
    if infos and all("chance" in i for i in infos):  # ranking tasks store each query's expected score at random
        return float(np.mean([i["chance"] for i in infos]))
    if name == "hybrids":  # the challenge's own evaluation: scores ranked against labels per group
        from biobench.challenge import scoring

        p = np.array([s for _, s, _ in predictions])
        y = np.array([i["label"] for i in infos])
        g = np.array([scoring.GROUPS.index(i["group"]) for i in infos])
        rng = np.random.default_rng(seed)
        return float(np.mean([scoring.challenge_metrics(rng.permutation(p), y, g)["challenge_score"] for _ in range(n)]))
    y = np.array([i["label"] for i in infos])
    pred = np.array([i["pred"] for i in infos])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        shuffled = pred[rng.permutation(len(pred))]
        values.append(metrics.point(spec.metric, y, shuffled, spec.metric.example_score(y, shuffled)))
    return float(np.mean(values))


@pytest.mark.parametrize("name", TASKS)
def test_fixture_scores_well_above_chance_and_shuffled_labels_near_it(runs, name):
    (good, good_preds), (bad, bad_preds) = runs["real", name], runs["shuffled", name]
    model = "builtin:pixel-stats" if expected_method(name) == "cvml" else "builtin:colour-clip"
    assert good["model"] == model and good["n_test"] == len(good_preds) > 0
    chance, chance_shuffled = permutation_chance(name, good_preds), permutation_chance(name, bad_preds)
    assert good["score"] > chance + 0.2 and good["ci_low"] > chance, (good["score"], chance)
    assert abs(bad["score"] - chance_shuffled) < max(0.15, bad["ci_high"] - bad["ci_low"]), (bad["score"], chance_shuffled)
    assert good["ci_low"] <= good["score"] <= good["ci_high"]


@pytest.mark.parametrize("name", TASKS)
def test_every_stored_prediction_keeps_its_label_and_prediction(runs, name):
    row, preds = runs["real", name]
    assert all("label" in info for _, _, info in preds)
    if get_task(name).evaluate is None:
        assert all("pred" in info for _, _, info in preds)
        assert row["metric"] == get_task(name).metric.name


def changed_options(name: str) -> dict:
    """Every option changed from its default (bools flipped, numbers moved, literals swapped)."""
    spec = get_task(name)
    hints = typing.get_type_hints(spec.options)
    out = {}
    for f in dataclasses.fields(spec.options):
        if f.name == "data" or f.default is dataclasses.MISSING:
            continue
        typ, default = hints[f.name], f.default
        if typing.get_origin(typ) is typing.Literal:
            out[f.name] = next(v for v in typing.get_args(typ) if v != default)
        elif isinstance(default, bool):
            out[f.name] = not default
        elif isinstance(default, (int, float)):
            out[f.name] = default + 1
        elif isinstance(default, tuple):
            out[f.name] = ("x",)
        elif isinstance(default, str):
            out[f.name] = default + "x"
    return out


PROTOCOLS = """
import json, sys
from biobench.plan import protocol_id
from biobench.config import Model
from biobench.tasks import get_task, task_names
out = {}
for name in task_names():
    spec = get_task(name)
    changed = json.loads(sys.argv[1])[name]
    opts = spec.options(data=".", **{k: tuple(v) if isinstance(v, list) else v for k, v in changed.items()})
    out[name] = [protocol_id(spec, spec.options(data="."), Model("builtin", "pixel-stats")),
                 protocol_id(spec, opts, Model("builtin", "pixel-stats")),
                 protocol_id(spec, opts, Model("local", "vlm", method="mllm", temperature=0.5))]
print(json.dumps(out))
"""


def test_protocol_ids_are_stable_across_processes_and_change_with_options():
    changed = json.dumps({name: changed_options(name) for name in TASKS})
    first, second = (
        json.loads(subprocess.run([sys.executable, "-c", PROTOCOLS, changed], capture_output=True, text=True, check=True).stdout)
        for _ in range(2)
    )
    assert first == second and set(first) == set(TASKS)
    for name, (default, changed_id, mllm) in first.items():
        spec = get_task(name)
        assert default == f"{name}/v{spec.version}"
        assert (changed_id != default) == bool(changed_options(name)), name
        assert mllm.startswith(changed_id + "|mllm-single+")


def pack(fixture: Path, resource, out: Path) -> Path:
    """The resource's file built from the fixture: an archive of the files its members name (relative to where
    it unpacks), or the file itself."""
    files = sorted({p for pattern in resource.members for p in fixture.glob(pattern) if p.is_file()})
    assert files, f"the fixture provides none of {resource.members}"
    path = out / resource.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    base = fixture / resource.into
    if not resource.extract:
        (file,) = files
        path.write_bytes(file.read_bytes())
    elif resource.filename.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as z:
            for f in files:
                z.write(f, f.relative_to(base).as_posix())
    else:
        with tarfile.open(path, "w:gz" if resource.filename.endswith(("gz", "tgz")) else "w") as tar:
            for f in files:
                tar.add(f, arcname=f.relative_to(base).as_posix())
    return path


def serve(path: Path, resource, base_url: str, prefix: str):
    """The resource pointing at the local server (split in two pieces if the real one comes in pieces)."""
    rel = resource.filename
    if isinstance(resource.url, str):
        return dataclasses.replace(resource, url=f"{base_url}/{prefix}/{rel}", md5=md5sum(path), md5_url=None)
    blob = path.read_bytes()
    urls = []
    for i, piece in enumerate((blob[: len(blob) // 2], blob[len(blob) // 2 :])):
        path.with_name(f"{path.name}.piece{i}").write_bytes(piece)
        urls.append(f"{base_url}/{prefix}/{rel}.piece{i}")
    path.with_name(f"{path.name}.md5").write_text(f"{md5sum(path)}  {path.name}\n")
    return dataclasses.replace(resource, url=tuple(urls), md5=None, md5_url=f"{base_url}/{prefix}/{rel}.md5")


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    served = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("name", TASKS)
def test_download_from_a_local_server_lays_out_what_read_accepts(tmp_path, http_root, name):
    spec = get_task(name)
    if name in SPECIAL_DOWNLOADS:
        pytest.skip(SPECIAL_DOWNLOADS[name])
    assert spec.resources, f"{name} declares no download resources"
    served, base = http_root
    fixture = tmp_path / "fixture"
    spec.fixture(fixture, seed=1)
    local = tuple(serve(pack(fixture, r, served / name), r, base, name) for r in spec.resources)
    target = tmp_path / "downloaded"
    spec.fetch(target, local)
    got, want = spec.read(spec.options(data=target)), spec.read(spec.options(data=fixture))
    assert got.table.equals(want.table) and got.images.ids == want.images.ids
    got.images.keys()  # every image is on disk
    assert not any((target / r.filename).exists() for r in local if r.extract)  # archives removed once unpacked
    spec.fetch(target, local)  # a second run finds everything in place
    assert got.table.equals(spec.read(spec.options(data=target)).table)
    bad = next(r for r in local if isinstance(r.url, str))
    with pytest.raises(DataError, match="md5"):
        spec.fetch(tmp_path / "bad", (dataclasses.replace(bad, md5="0" * 32),))


@pytest.mark.parametrize("name", TASKS)
def test_missing_data_names_the_task_and_the_path(tmp_path, name):
    spec = get_task(name)
    with pytest.raises(DataError) as info:
        spec.read(spec.options(data=tmp_path))
    message = str(info.value)
    assert name in message.lower() and str(tmp_path) in message
    assert f"biobench download {name}" in message or f"biobench fixture {name}" in message
