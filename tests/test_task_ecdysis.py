"""Ecdysis: the per-class temporal split (checked by hand), bad inputs, and the download from a local server."""

from __future__ import annotations

import logging
import shutil
import zipfile

import polars as pl
import pytest

from biobench.errors import DataError
from biobench.tasks.ecdysis import IMAGES_DIR, METADATA, Options, download_from, make_fixture, read
from tests.test_task_contract import http_root  # noqa: F401 (the fixture: a local HTTP server)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecdysis") / "data"
    make_fixture(root)
    return root


@pytest.fixture
def data(fixture_dir, tmp_path):
    shutil.copytree(fixture_dir, tmp_path / "d")
    return tmp_path / "d"


def edit(data, fn):
    df = pl.read_csv(data / METADATA, infer_schema=False)
    fn(df).write_csv(data / METADATA)


def test_each_class_trains_on_its_earliest_80_percent_of_visits(data, caplog):
    caplog.set_level(logging.INFO)
    ex = read(Options(data=data))
    meta = pl.read_csv(data / METADATA, infer_schema=False).filter(pl.col("image_thumbnail_large") != "")
    split = dict(zip(ex.table["id"], ex.table["split"]))
    taxa = meta.with_columns(taxon=pl.concat_str([pl.col(c).fill_null("") for c in meta.columns if c.startswith("gbif_")], separator="|"))
    kept = 0
    for _, group in taxa.group_by("taxon"):
        if group.height == 1:  # dropped: nothing to train on
            assert group["id"][0] not in split
            continue
        rows = sorted(zip(group["visit_date"], range(group.height), group["id"]))  # by date, then file order
        n_train = int(0.8 * len(rows))
        assert [split[i] for _, _, i in rows] == ["train"] * n_train + ["test"] * (len(rows) - n_train)
        kept += len(rows)
    assert kept == ex.table.height == 92
    assert "dropped 1 of 5 classes with one image" in caplog.text and "dropped 1 of 94 rows" in caplog.text
    assert "Insecta|Diptera|Syrphidae|Toxomerus|" in ex.names("")  # identified to genus only: still a class


def test_a_bad_date_is_an_error_naming_the_line(data):
    edit(
        data,
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("06/15/2023")).otherwise(pl.col("visit_date")).alias("visit_date")
        ),
    )
    with pytest.raises(DataError, match=r"metadata.csv line 5: visit_date must start YYYY-MM-DD, got '06/15/2023'"):
        read(Options(data=data))


def test_a_row_without_a_date_is_dropped(data, caplog):
    caplog.set_level(logging.INFO)
    edit(
        data,
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("")).otherwise(pl.col("visit_date")).alias("visit_date")
        ),
    )
    assert read(Options(data=data)).table.height in (90, 91)  # its class may become a single (then dropped too)
    assert "dropped 2 of 94 rows" in caplog.text


def test_a_repeated_id_or_image_is_an_error(data):
    edit(
        data, lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(df["id"][0])).otherwise(pl.col("id")).alias("id"))
    )
    with pytest.raises(DataError, match="id '.*' appears 2 times"):
        read(Options(data=data))


def test_a_missing_image_is_an_error_naming_it(data):
    first = pl.read_csv(data / METADATA, infer_schema=False)["image_thumbnail_large"][0].split("/")[-1]
    (data / IMAGES_DIR / first).unlink()
    with pytest.raises(DataError, match=rf"(?s)1 of 92 images listed in .*metadata.csv are missing.*line 2 \({first}\)"):
        read(Options(data=data))


def test_missing_metadata_or_column_is_an_error(data):
    edit(data, lambda df: df.drop("visit_date"))
    with pytest.raises(DataError, match="lacks column\\(s\\) 'visit_date'"):
        read(Options(data=data))
    (data / METADATA).unlink()
    with pytest.raises(DataError, match="metadata.csv not found.*biobench download ecdysis"):
        read(Options(data=data))


def test_download_reads_the_page_link_and_fetches_every_image(fixture_dir, tmp_path, http_root):  # noqa: F811
    served, base = http_root
    served, base = served / "ecdysis", f"{base}/ecdysis"
    served.mkdir()
    meta = pl.read_csv(fixture_dir / METADATA, infer_schema=False)
    files = meta["image_thumbnail_large"].str.split("/").list.last()
    meta = meta.with_columns(public_url=pl.when(files != "").then(pl.lit(f"{base}/media/") + files).otherwise(pl.lit("")))
    (served / "media").mkdir()
    for f in files:
        if f:
            shutil.copy(fixture_dir / IMAGES_DIR / f, served / "media" / f)
    (served / "exports").mkdir()
    with zipfile.ZipFile(served / "exports" / "collection-1.csv.zip", "w") as z:
        z.writestr("zip", meta.write_csv())  # the export's one member is called "zip"
    (served / "page.html").write_text('<html><a href="exports/collection-1.csv.zip?t=1">Download CSV</a></html>')

    target = tmp_path / "downloaded"
    download_from(target, f"{base}/page.html", workers=4)
    got, want = read(Options(data=target)), read(Options(data=fixture_dir))
    assert got.table.equals(want.table) and not (target / "metadata.csv.zip").exists()
    download_from(target, f"{base}/nowhere.html")  # metadata present, images present: nothing fetched

    (served / "media" / files[0]).unlink()
    with pytest.raises(DataError, match=rf"(?s)1 of 93 ecdysis images failed to download.*{files[0]}.*Rerun"):
        download_from(tmp_path / "again", f"{base}/page.html")
    (served / "page.html").write_text("<html>moved</html>")
    with pytest.raises(DataError, match="no .csv.zip link"):
        download_from(tmp_path / "third", f"{base}/page.html")
