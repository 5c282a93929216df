"""Beluga: the COCO layout, its bad inputs, and the leave-one-out top-1 protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biobench import stats
from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.probes import LeaveOneOutKnn
from biobench.routes.probe import evaluate
from biobench.tasks import beluga


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("beluga")
    beluga.make_fixture(d, seed=0)
    return d


def _doc(root: Path) -> dict:
    return json.loads((root / beluga.JSON).read_text())


def _copy(src: Path, dst: Path, doc: dict | None = None) -> Path:
    """The fixture's images linked into `dst`, with `doc` (default: the fixture's) as the JSON."""
    (dst / beluga.IMAGES_DIR).mkdir(parents=True)
    for f in (src / beluga.IMAGES_DIR).iterdir():
        (dst / beluga.IMAGES_DIR / f.name).symlink_to(f)
    (dst / beluga.JSON).parent.mkdir(parents=True)
    (dst / beluga.JSON).write_text(json.dumps(_doc(src) if doc is None else doc))
    return dst


def _run(root: Path, features: np.ndarray, n_bootstrap: int = 100, **options):
    opts = beluga.Options(data=root, **options)
    examples = beluga.read(opts)
    return examples, evaluate(beluga.SPEC, opts, examples, features, EvalContext(n_train=-1, seed=0, n_bootstrap=n_bootstrap))


def _on_circle(angles: np.ndarray) -> np.ndarray:
    """Unit vectors: cosine and Euclidean neighbours agree."""
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_fixture_is_lilas_coco_layout(data):
    doc = _doc(data)
    assert {"images", "annotations", "categories"} <= set(doc)
    ann = doc["annotations"][0]
    assert {"id", "image_id", "bbox", "category_id", "name"} <= set(ann)
    assert all((data / "beluga.coco/images/train2022" / img["file_name"]).is_file() for img in doc["images"])
    examples = beluga.read(beluga.Options(data=data))
    t = examples.table
    assert t.height == len(doc["annotations"]) and set(t["split"]) == {"test"}
    names = [a["name"] for a in doc["annotations"]]
    assert t["group"].to_list() == names  # the bootstrap clusters by individual
    assert list(examples.names("")) == sorted(set(names))
    assert [examples.names("")[y] for y in t["label"]] == names  # label = dense index of the individual
    assert examples.images.crops is None  # whole images: the photos are already crops


def test_truncated_json_names_file_line_and_column(data, tmp_path):
    root = _copy(data, tmp_path / "d")
    text = (root / beluga.JSON).read_text()
    (root / beluga.JSON).write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"instances_train2022\.json.*line \d+, column \d+"):
        beluga.read(beluga.Options(data=root))


def test_unknown_image_id_names_the_annotation(data, tmp_path):
    doc = _doc(data)
    doc["annotations"][3]["image_id"] = 99999
    root = _copy(data, tmp_path / "d", doc)
    with pytest.raises(DataError, match=rf"annotation {doc['annotations'][3]['id']} names image_id 99999"):
        beluga.read(beluga.Options(data=root))


def test_annotation_without_individual_is_named(data, tmp_path):
    doc = _doc(data)
    del doc["annotations"][5]["name"]
    root = _copy(data, tmp_path / "d", doc)
    with pytest.raises(DataError, match=rf"instances_train2022\.json: annotation {doc['annotations'][5]['id']} has no 'name'"):
        beluga.read(beluga.Options(data=root))


def test_two_annotations_on_one_image_are_refused(data, tmp_path):
    # Uncropped, both would embed to the same vector and match each other for free.
    doc = _doc(data)
    extra = dict(doc["annotations"][0], id=5000)
    doc["annotations"].append(extra)
    root = _copy(data, tmp_path / "d", doc)
    file_name = doc["images"][0]["file_name"]
    with pytest.raises(DataError, match=rf"image {file_name} has 2 annotations \(1, 5000\)"):
        beluga.read(beluga.Options(data=root))


def test_missing_image_names_its_annotation(data, tmp_path):
    root = _copy(data, tmp_path / "d")
    doc = _doc(data)
    (root / beluga.IMAGES_DIR / doc["images"][2]["file_name"]).unlink()
    with pytest.raises(DataError, match=rf"annotation {doc['annotations'][2]['id']}: .*{doc['images'][2]['file_name']}"):
        beluga.read(beluga.Options(data=root))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_top1_compares_individuals_not_indices(tmp_path, distance):
    beluga.make_fixture(tmp_path, n_singletons=0)
    examples = beluga.read(beluga.Options(data=tmp_path))
    y = examples.labels()
    k = int(y.max()) + 1
    rank = np.asarray([np.sum(y[:i] == y[i]) for i in range(len(y))])
    # Each whale's photos sit together: every nearest other photo is the same whale.
    together = _on_circle(2 * np.pi * y / k + 1e-4 * rank)
    _, report = _run(tmp_path, together, distance=distance)
    assert report.score == 1.0 and (np.asarray([i["pred"] for i in report.example_info]) == y).all()
    # Photos on a half circle, whales interleaved (even slots, then odd): every nearest photo is another whale.
    slot = np.empty(len(y), dtype=np.int64)
    slot[np.argsort(y, kind="stable")] = np.r_[np.arange(0, len(y), 2), np.arange(1, len(y), 2)]
    assert (np.diff(y[np.argsort(slot)]) != 0).all()
    _, report = _run(tmp_path, _on_circle(np.pi * slot / len(y)), distance=distance)
    assert report.score == 0.0


def test_single_photo_individuals_are_kept_and_score_zero(data):
    examples = beluga.read(beluga.Options(data=data))
    y = examples.labels()
    counts = np.bincount(y)
    single = counts[y] == 1
    assert single.sum() == 4 and len(y) == len(_doc(data)["annotations"])
    rank = np.asarray([np.sum(y[:i] == y[i]) for i in range(len(y))])
    _, report = _run(data, _on_circle(2 * np.pi * y / len(counts) + 1e-4 * rank))
    scores = np.asarray(report.example_scores)
    assert (scores[single] == 0).all() and (scores[~single] == 1).all()
    assert report.score == pytest.approx((~single).mean())


def test_interval_resamples_whole_individuals(data):
    from biobench.backbones import load_vision_backbone
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features

    examples = beluga.read(beluga.Options(data=data))
    features = get_features(
        load_vision_backbone("builtin", "pixel-stats"),
        examples.images,
        FeatureCache(data.parent / "cache"),
        EmbedSettings("cpu", 64, 0, "stat"),
    ).features
    _, report = _run(data, features, n_bootstrap=200)
    expected = stats.cluster_mean_ci(np.asarray(report.example_scores), examples.table["group"].to_numpy(), n_resamples=200, seed=0)
    assert (report.score, report.ci_low, report.ci_high) == pytest.approx((expected.estimate, expected.low, expected.high))
    plain = stats.mean_ci(np.asarray(report.example_scores), n_resamples=200, seed=0)
    assert (report.ci_low, report.ci_high) != pytest.approx((plain.low, plain.high))


def test_probe_is_leave_one_out_1nn_euclidean_by_default(data):
    assert beluga.SPEC.probe_for(beluga.Options(data=data)) == LeaveOneOutKnn(k=1, metric="euclidean")
    assert beluga.SPEC.probe_for(beluga.Options(data=data, distance="cosine")) == LeaveOneOutKnn(k=1, metric="cosine")
    assert beluga.SPEC.uses_n_train is False and beluga.SPEC.metric.resample == "clustered"
