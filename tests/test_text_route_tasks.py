"""Zero-shot as the text route of the suite's classification tasks: name forms from each dataset, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biobench import cli, fixtures, report
from biobench.errors import DataError
from biobench.routes import text
from biobench.tasks import get_task
from biobench.tasks.plantnet import without_author


def coloured_plankton(root, *, shuffle: bool, seed: int = 0) -> None:
    """Plankton's layout (train/ and val/ class folders of PNGs) with class folders named after coloured taxa
    ("Turdus_ruber"), each image mostly its class's colour; `shuffle` puts each image in a random class's folder."""
    rng = np.random.default_rng(seed)
    taxa = fixtures.COLOURED_TAXA[:5]
    for split, n in (("train", 3), ("val", 8)):
        drawn = np.repeat(np.arange(len(taxa)), n)
        folders = rng.integers(0, len(taxa), size=len(drawn)) if shuffle else drawn
        for k, (c, f) in enumerate(zip(drawn, folders)):
            path = root / split / f"{taxa[f][1]}_{taxa[f][2]}" / f"D20210101T000000_IFCB114_{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fixtures.colour_image(rng, taxa[c][4]).convert("RGB").save(path, format="PNG")


def run(tmp_path, name: str, data, **options) -> dict:
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 200\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n'
        f'[data]\n{name} = "{data}"\n' + (f"\n[{name}]\n{table}" if table else "")
    )
    assert cli.main(["run", str(cfg)]) == 0
    (row,) = [r for r in report.load(tmp_path / "results" / "results.sqlite") if r["task"] == name]
    return row


def test_plankton_zero_shot_end_to_end_beats_chance_and_shuffled_names_sit_at_it(tmp_path):
    coloured_plankton(tmp_path / "real", shuffle=False)
    coloured_plankton(tmp_path / "shuffled", shuffle=True)
    good = run(tmp_path / "a", "plankton", tmp_path / "real")
    assert good["method"] == "zero-shot" and good["n_test"] == 40 and good["n_train"] == -1
    assert good["score"] > 0.9 and good["ci_low"] > 0.5  # 5 classes: chance 0.2
    sub = json.loads(good["sub_scores"])
    assert set(sub["class"]) == {f"{t[1]}_{t[2]}" for t in fixtures.COLOURED_TAXA[:5]}  # the dataset's own names
    bad = run(tmp_path / "b", "plankton", tmp_path / "shuffled")
    assert abs(bad["score"] - 0.2) < 0.2, bad["score"]


def test_prompts_read_underscores_as_spaces_and_reject_id_only_names():
    assert text.readable(" Chaetoceros_sp ") == "Chaetoceros sp" and text.readable("Snowella__Woronichinia") == "Snowella Woronichinia"
    with pytest.raises(DataError, match="named only by an id"):
        text.check_names("plantnet", "", ["Lactuca virosa", "1355920"], np.array([0, 1]))


def test_inat21_name_forms_come_from_the_folders_and_val_json(tmp_path):
    spec = get_task("inat21")
    spec.fixture(tmp_path)
    ex = spec.read(spec.options(data=tmp_path))
    names = text.prompt_names(spec, spec.options(data=tmp_path), ex)[""]
    assert names[0] == "Lumbricus terrestris" and names[2] == "Turdus migratorius"
    tax = text.prompt_names(spec, spec.options(data=tmp_path, names="taxonomic"), ex)[""]
    assert tax[0] == "Animalia Annelida Clitellata Haplotaxida Lumbricidae Lumbricus terrestris"
    with pytest.raises(DataError, match="val.json gives no common_name"):
        text.prompt_names(spec, spec.options(data=tmp_path, names="scientific+common"), ex)
    cats = [{"id": i, "image_dir_name": f, "common_name": f"common {i}"} for i, f in enumerate(ex.names(""))]
    (tmp_path / "val.json").write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    both = text.prompt_names(spec, spec.options(data=tmp_path, names="scientific+common"), ex)[""]
    assert both[0] == "Lumbricus terrestris with common name common 0"


def test_plantnet_drops_authors_and_needs_its_names_file(tmp_path):
    assert without_author("Pelargonium zonale (L.) L'Hér.") == "Pelargonium zonale"
    assert without_author("Zamia furfuracea L.f.") == "Zamia furfuracea"
    assert without_author("Mentha × piperita L.") == "Mentha × piperita"
    assert without_author("Hypericum perforatum subsp. veronense (Schrank) H.Lindb.") == "Hypericum perforatum subsp. veronense"
    spec = get_task("plantnet")
    spec.fixture(tmp_path)
    ex = spec.read(spec.options(data=tmp_path))
    assert "Cirsium vulgare" in text.prompt_names(spec, spec.options(data=tmp_path), ex)[""]
    assert "Cirsium vulgare (Savi) Ten." in text.prompt_names(spec, spec.options(data=tmp_path, names="as-given"), ex)[""]
    (tmp_path / "plantnet300K_species_id_2_name.json").unlink()
    with pytest.raises(DataError, match="plantnet300K_species_id_2_name.json"):
        text.prompt_names(spec, spec.options(data=tmp_path), spec.read(spec.options(data=tmp_path)))


@pytest.mark.parametrize("layout", ["saved", "folders"])
def test_rare_species_name_forms_from_the_ranks_and_the_common_column(tmp_path, layout):
    spec = get_task("rarespecies")
    spec.fixture(tmp_path, layout=layout)
    opts = spec.options(data=tmp_path)
    assert "Acanthochelys macrocephala" in text.prompt_names(spec, opts, spec.read(opts))[""]
    opts = spec.options(data=tmp_path, names="taxonomic+common")
    names = text.prompt_names(spec, opts, spec.read(opts))[""]
    assert "Animalia Chordata Aves Accipitriformes Accipitridae Haliaeetus vociferoides with common name Madagascar fish eagle" in names


def test_every_classification_task_with_class_names_has_the_text_route(tmp_path):
    for name in ("plankton", "plantnet", "inat21", "rarespecies", "birds525", "imagenet", "ecdysis"):
        assert get_task(name).supports("text") and get_task(name).supports("probe"), name
    for name, index, expected in (("birds525", 1, "bald eagle"), ("imagenet", 0, "tench")):
        spec = get_task(name)
        spec.fixture(tmp_path / name)
        opts = spec.options(data=tmp_path / name)
        assert text.prompt_names(spec, opts, spec.read(opts))[""][index] == expected


# Downloads of the zero-shot sets


def local_server(directory):
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_camera_traps_download_fetches_the_csvs_then_every_image_with_md5(tmp_path):
    import dataclasses

    from biobench.tasks.clip_sets import CAMERA_TRAP_RESOURCES

    spec = get_task("idle-oo-camera-traps")
    served = tmp_path / "served"
    spec.fixture(served / "fixture")
    server, base = local_server(served)
    try:
        mirrored = []
        for r in CAMERA_TRAP_RESOURCES:  # the CSVs the fixture has, their LILA URLs pointing at the local server
            csv = served / "fixture" / r.filename
            if csv.is_file():
                (served / r.filename).write_text(
                    csv.read_text().replace("https://storage.googleapis.com/public-datasets-lila/", f"{base}/lila/")
                )
                mirrored.append(dataclasses.replace(r, url=f"{base}/{r.filename}"))
        assert len(mirrored) == 2
        for csv in (served / "fixture").glob("*-balanced.csv"):  # LILA's copy of each image, at url_gcp
            subset = csv.name.removesuffix("-balanced.csv")
            for i, img in enumerate(sorted((served / "fixture" / subset).glob("*.jpg"))):
                (served / "lila" / subset / "images").mkdir(parents=True, exist_ok=True)
                (served / "lila" / subset / "images" / f"{i}.jpg").write_bytes(img.read_bytes())
        broken = served / "lila" / "ENA24" / "images" / "3.jpg"
        good = broken.read_bytes()
        broken.write_bytes(b"not the image")
        target = tmp_path / "target"
        with pytest.raises(DataError, match=r"(?s)1 of 60 idle-oo-camera-traps images failed.*0003\.jpg.*md5") as err:
            spec.fetch(target, tuple(mirrored))
        assert "Rerun" in str(err.value) and not (target / "ENA24" / "0003.jpg").exists()
        broken.write_bytes(good)
        spec.fetch(target, tuple(mirrored))  # the rerun fetches what failed
        got, want = spec.read(spec.options(data=target)), spec.read(spec.options(data=served / "fixture"))
        assert got.table.equals(want.table) and [p.read_bytes() for p in got.images.paths] == [p.read_bytes() for p in want.images.paths]
    finally:
        server.shutdown()


@pytest.mark.parametrize("name", ["nabirds", "meta-album-plk"])
def test_sets_behind_a_form_or_without_an_address_print_the_steps_and_layout(tmp_path, name):
    with pytest.raises(DataError) as err:
        get_task(name).fetch(tmp_path / "d")
    text = str(err.value)
    assert "Get it by hand" in text and f"{tmp_path / 'd'}/metadata.csv" in text and "filepath" in text
    assert ("dl.allaboutbirds.org/nabirds" in text) == (name == "nabirds") and ("meta-album.github.io" in text) != (name == "nabirds")
    get_task(name).fixture(tmp_path / "placed")
    get_task(name).fetch(tmp_path / "placed")  # laid out by hand: nothing to do
