"""Leopard: the COCO layout cropped to each bbox, its bad inputs, exemplar SVMs against scikit-learn's LinearSVC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from biobench import stats
from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.images import load_rgb
from biobench.probes import ExemplarSvm
from biobench.routes.probe import evaluate
from biobench.tasks import leopard


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("leopard")
    leopard.make_fixture(d, seed=0)
    return d


def _doc(root: Path) -> dict:
    return json.loads((root / leopard.EXPORT.json).read_text())


def _with(src: Path, dst: Path, edit) -> Path:
    """The fixture's images linked into `dst`, with its JSON after `edit(doc)`."""
    (dst / leopard.EXPORT.images_dir).mkdir(parents=True)
    for f in (src / leopard.EXPORT.images_dir).iterdir():
        (dst / leopard.EXPORT.images_dir / f.name).symlink_to(f)
    doc = _doc(src)
    edit(doc)
    (dst / leopard.EXPORT.json).parent.mkdir(parents=True)
    (dst / leopard.EXPORT.json).write_text(json.dumps(doc))
    return dst


def _report(root: Path, features: np.ndarray, n_bootstrap: int = 200, **options):
    opts = leopard.Options(data=root, **options)
    return evaluate(leopard.SPEC, opts, leopard.read(opts), features, EvalContext(n_bootstrap=n_bootstrap))


def test_every_annotation_is_an_example_cropped_to_its_bbox(data):
    doc = _doc(data)
    examples = leopard.read(leopard.Options(data=data))
    anns = doc["annotations"]
    assert examples.table.height == len(anns) > len(doc["images"])  # some scenes hold two leopards
    assert list(examples.images.ids) == [str(a["id"]) for a in anns]
    assert examples.table["group"].to_list() == [a["name"] for a in anns]
    for a, crop, path in zip(anns, examples.images.crops, examples.images.paths):
        x, y, w, h = a["bbox"]
        assert crop == (x, y, x + w, y + h)
        assert load_rgb(path, crop).size == (w, h)
    two = next(i for i in doc["images"] if sum(a["image_id"] == i["id"] for a in anns) == 2)
    crops = [c for a, c in zip(anns, examples.images.crops) if a["image_id"] == two["id"]]
    assert crops[0] != crops[1]  # two leopards on one photo: two different crops


@pytest.mark.parametrize("bbox", [None, [1, 2, 3], [5, 5, 0, 10], [5, 5, 10, -1], ["a", 0, 1, 1]])
def test_bad_bbox_names_the_annotation(data, tmp_path, bbox):
    def edit(doc):
        if bbox is None:
            del doc["annotations"][4]["bbox"]
        else:
            doc["annotations"][4]["bbox"] = bbox

    root = _with(data, tmp_path / "d", edit)
    with pytest.raises(DataError, match=r"instances_train2022\.json: annotation 5 needs bbox \[x, y, width, height\]"):
        leopard.read(leopard.Options(data=root))


def test_annotation_without_individual_unknown_image_and_missing_file_are_named(data, tmp_path):
    root = _with(data, tmp_path / "a", lambda doc: doc["annotations"][2].pop("name"))
    with pytest.raises(DataError, match=r"annotation 3 has no 'name'"):
        leopard.read(leopard.Options(data=root))
    root = _with(data, tmp_path / "b", lambda doc: doc["annotations"][2].update(image_id=424242))
    with pytest.raises(DataError, match=r"annotation 3 names image_id 424242"):
        leopard.read(leopard.Options(data=root))
    root = _with(data, tmp_path / "c", lambda doc: None)
    gone = _doc(data)["images"][0]["file_name"]
    (root / leopard.EXPORT.images_dir / gone).unlink()
    with pytest.raises(DataError, match=rf"annotation 1: .*{gone}"):
        leopard.read(leopard.Options(data=root))
    root = _with(data, tmp_path / "e", lambda doc: None)
    (root / leopard.EXPORT.json).write_text('{"images": [], "annotations": [')
    with pytest.raises(DataError, match=r"instances_train2022\.json is not valid JSON \(line 1"):
        leopard.read(leopard.Options(data=root))


def test_images_without_annotations_are_not_examples(data, tmp_path):
    root = _with(data, tmp_path / "d", lambda doc: doc["images"].append({"id": 9999, "file_name": "empty.jpg"}))
    assert leopard.read(leopard.Options(data=root)).table.height == len(_doc(data)["annotations"])


def _reference(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Per query: scikit-learn's LinearSVC (the seed's settings) with it the only positive; the best other example's label."""
    out = []
    for i in range(len(x)):
        target = np.zeros(len(x))
        target[i] = 1
        clf = LinearSVC(C=c, class_weight="balanced", max_iter=10000, tol=1e-6).fit(x, target)
        scores = clf.decision_function(x)
        scores[i] = -np.inf
        out.append(y[np.argmax(scores)])
    return np.asarray(out)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_best_non_self_match_equals_per_query_linear_svc(tmp_path, c):
    leopard.make_fixture(tmp_path, seed=1, n_individuals=12, n_singletons=2)
    examples = leopard.read(leopard.Options(data=tmp_path))
    y = examples.labels()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12 + 2, 8))[y] + 0.8 * rng.normal(size=(len(y), 8))  # individuals overlap: not every match is right
    report = _report(tmp_path, x, c=c)
    pred = np.array([i["pred"] for i in report.example_info])
    want = _reference(x, y, c)
    assert np.array_equal(pred, want)
    assert 0.2 < report.score < 0.95 and report.score == pytest.approx(np.mean(want == y))
    single = np.bincount(y)[y] == 1
    assert not (pred[single] == y[single]).any()  # photographed once: never matched


def test_interval_resamples_whole_individuals_and_probe_is_the_seeds(data):
    examples = leopard.read(leopard.Options(data=data))
    y = examples.labels()
    x = np.random.default_rng(2).normal(size=(int(y.max()) + 1, 6))[y] + 0.5 * np.random.default_rng(3).normal(size=(len(y), 6))
    report = _report(data, x, n_bootstrap=300)
    want = stats.cluster_mean_ci(np.asarray(report.example_scores), examples.table["group"].to_numpy(), n_resamples=300, seed=0)
    assert (report.score, report.ci_low, report.ci_high) == pytest.approx((want.estimate, want.low, want.high))
    assert leopard.SPEC.probe_for(leopard.Options(data=data)) == ExemplarSvm(c=0.1)
    assert leopard.SPEC.uses_n_train is False and leopard.SPEC.kind == "re-identification"
