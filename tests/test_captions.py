"""The caption pipeline against a fake MediaWiki API (tests/wiki_server.py) and the fake OpenAI-compatible server."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from biobench import cli
from biobench.captions import generate as gen
from biobench.captions import wiki as wiki_mod
from biobench.captions.commands import LlmOptions
from biobench.captions.mediawiki import MediaWiki, WikiRequestError, split_sections, visual_sections
from biobench.captions.shards import check_tar, expand_braces, iter_samples, sample_ranks
from biobench.captions.taxa import read_taxa
from biobench.errors import BiobenchError, DataError
from tests.wiki_server import Server, Wiki

UA = "biobench-tests/0.1 (https://example.org; tests@example.org)"
HEADER = "split,treeoflife_id,eol_content_id,eol_page_id,bioscan_part,bioscan_filename,inat21_filename,inat21_cls_name,inat21_cls_num,kingdom,phylum,class,order,family,genus,species,common"  # fmt: skip

SPARROW = (
    "The house sparrow is a bird of the family Passeridae.\n\n"
    "== Description ==\nThe male has a grey crown and a black bib. The female is plain brown with a pale eyestripe.\n\n"
    "=== Measurements ===\nIt is 16 cm long.\n\n"
    "== Distribution ==\nIt lives nearly everywhere."
)
ROWS = [
    # kingdom, phylum, class, order, family, genus, species, common
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Passeridae", "Passer", "domesticus", "house sparrow"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Passeridae", "Passer", "domesticus", "house sparrow"),  # duplicate
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Fringillidae", "Fringilla", "coelebs", "chaffinch"),  # redirect
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "ambigua", ""),  # disambiguation
    ("Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Amanitaceae", "Amanita", "nonexistens", ""),  # missing
    ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Vanessa", "cardui", "painted lady"),  # 429 then ok
    ("Animalia", "Mollusca", "Gastropoda", "Stylommatophora", "Helicidae", "Helix", "pomatia", ""),  # 500 then ok
    ("Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Felis", "brokenis", ""),  # always 500
    # the same binomial in two kingdoms: the page names Orchidaceae
    ("Plantae", "Tracheophyta", "Liliopsida", "Asparagales", "Orchidaceae", "Dracula", "vampira", ""),
    ("Animalia", "Arthropoda", "Insecta", "Diptera", "Drosophilidae", "Dracula", "vampira", ""),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "", "", ""),  # no genus / species: skipped
]


def write_catalog(path: Path, rows=ROWS, header=HEADER) -> Path:
    lines = [header] + [f"train,id{i},,,,,,,,{','.join(r)}" for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_wiki() -> Wiki:
    return Wiki(
        pages={
            "Passer domesticus": {"extract": SPARROW, "revid": 111, "pageid": 11},
            "Common chaffinch": {"extract": "Intro.\n\n== Appearance ==\nThe male has a blue-grey cap and a pink breast.", "revid": 222},
            "Rosa ambigua": {"extract": "Rosa ambigua may refer to:", "revid": 333, "disambiguation": True},
            "Vanessa cardui": {"extract": "== Description ==\nOrange wings with black and white spots.", "revid": 444},
            "Helix pomatia": {"extract": "== Shell description ==\nA large creamy-brown shell.", "revid": 555},
            "Dracula vampira": {
                "extract": "Dracula vampira is an orchid (family Orchidaceae).\n\n== Description ==\nBlack-veined sepals.",
                "revid": 666,
            },
        },
        redirects={"Fringilla coelebs": "Common chaffinch"},
        links={"Rosa ambigua": ["Rosa ambigua (plant)", "Rosa ambigua (moth)"]},
        search={"Amanita nonexistens": ["Amanita", "Amanita muscaria"]},
        script={"Vanessa cardui": ["429"], "Helix pomatia": ["500"]},
        always_500={"Felis brokenis"},
    )


def scrape(server, csv, out, **kw):
    args = dict(api_url=server.url, user_agent=UA, workers=3, max_rps=50.0, max_retries=2, backoff_s=0.01, max_backoff_s=0.05)
    return wiki_mod.scrape(csv, out, **{**args, **kw})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Taxa and parsing


def test_taxa_unique_by_all_seven_ranks(tmp_path):
    taxa, skipped = read_taxa(write_catalog(tmp_path / "catalog.csv"))
    assert len(taxa) == 9 and skipped == 1
    assert sum(t.binomial == "Dracula vampira" for t in taxa) == 2  # a hemihomonym keeps both taxa
    assert taxa[0].rank_dict()["family"] == "Passeridae" and taxa[0].common == "house sparrow"


def test_catalog_missing_a_rank_column_names_the_file_and_column(tmp_path, capsys):
    bad = write_catalog(tmp_path / "catalog.csv", rows=[r[:4] + r[5:] for r in ROWS[:2]], header=HEADER.replace("family,", ""))
    with pytest.raises(DataError, match=r"catalog\.csv lacks the rank column\(s\) family"):
        read_taxa(bad)
    assert cli.main(["wiki", "scrape", "--taxa", str(bad), "--out", str(tmp_path / "w"), "--user-agent", UA]) == 1
    assert f"{bad} lacks the rank column(s) family" in capsys.readouterr().err


def test_sections_keep_visual_headings_and_their_subsections():
    intro, sections = split_sections(SPARROW)
    assert intro.startswith("The house sparrow")
    assert [s.heading for s in visual_sections(sections)] == ["Description", "Measurements"]


def test_brace_expansion_and_taxon_tags():
    assert expand_braces("d/shard-{000000..000002}.tar") == [f"d/shard-00000{i}.tar" for i in range(3)]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    tag = "a photo of kingdom Animalia phylum Chordata class Aves order Passeriformes family Passeridae genus Passer species domesticus."
    assert sample_ranks({"taxontag.txt": tag.encode()}) == {
        "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Passeriformes",
        "family": "Passeridae", "genus": "Passer", "species": "domesticus",
    }  # fmt: skip
    assert (
        sample_ranks({"taxonomic_name.txt": b"Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina"})["class"] == "Magnoliopsida"
    )


def test_user_agent_must_identify_the_operator():
    with pytest.raises(BiobenchError, match="User-Agent"):
        MediaWiki("http://127.0.0.1:9/w/api.php", user_agent="python-urllib")


# Scraping


def test_scrape_statuses_revisions_rate_limit_and_retries(tmp_path):
    csv = write_catalog(tmp_path / "catalog.csv")
    with Server(fake_wiki()) as server:
        summary = scrape(server, csv, tmp_path / "wiki", max_rps=20.0)
        w = server.wiki
    by = {(r["binomial"], r["ranks"]["kingdom"]): r for r in lines(tmp_path / "wiki" / "pages.jsonl")}
    assert len(by) == 9 and summary.fetched == 9
    sparrow = by[("Passer domesticus", "Animalia")]
    assert sparrow["status"] == "ok" and sparrow["revid"] == 111 and sparrow["pageid"] == 11
    assert [s["heading"] for s in sparrow["sections"]] == ["Description", "Measurements"]
    assert "black bib" in sparrow["sections"][0]["text"] and sparrow["headings"][-1] == "Distribution"
    chaffinch = by[("Fringilla coelebs", "Animalia")]
    assert chaffinch["status"] == "ok" and chaffinch["title"] == "Common chaffinch" and chaffinch["redirected_from"] == "Fringilla coelebs"
    rosa = by[("Rosa ambigua", "Plantae")]
    assert rosa["status"] == "disambiguation" and rosa["candidates"] == ["Rosa ambigua (plant)", "Rosa ambigua (moth)"]
    amanita = by[("Amanita nonexistens", "Fungi")]
    assert amanita["status"] == "missing" and amanita["candidates"] == ["Amanita", "Amanita muscaria"]
    assert by[("Vanessa cardui", "Animalia")]["status"] == "ok" and by[("Helix pomatia", "Animalia")]["revid"] == 555
    broken = by[("Felis brokenis", "Animalia")]
    assert broken["status"] == "error" and "gave up after 3 attempts (HTTP 500)" in broken["error"] and server.url in broken["error"]
    # Ambiguous binomial: the page names Orchidaceae, so the orchid gets it and the fly is flagged.
    assert by[("Dracula vampira", "Plantae")]["status"] == "ok" and by[("Dracula vampira", "Plantae")]["resolved_by"] == "family"
    fly = by[("Dracula vampira", "Animalia")]
    assert fly["status"] == "ambiguous" and fly["candidates"] == ["Dracula vampira"] and "names another taxon" in fly["error"]

    # Retries are bounded: 1 + max_retries requests for a page that always fails; one retry after a 429 / 500.
    assert len(w.page_requests("Felis brokenis")) == 3
    assert len(w.page_requests("Helix pomatia")) == 2 and len(w.page_requests("Dracula vampira")) == 1
    first, second = w.page_requests("Vanessa cardui")
    assert second - first >= 0.95  # Retry-After: 1 honoured (the backoff alone is at most 0.05 s)
    # Rate limit: request starts at least 1/max_rps apart (from all threads together), and every request identifies us.
    # (Arrival times jitter by a thread switch, so check every span: k requests take at least (k-1)/max_rps.)
    times = np.array(sorted(t for t, _, _ in w.requests))
    gaps = [times[j] - times[i] - (j - i) / 20.0 for i in range(len(times)) for j in range(i + 1, len(times))]
    assert min(gaps) >= -0.03
    assert {ua for _, _, ua in w.requests} == {UA}
    assert all(p.get("maxlag") == "5" and p["format"] == "json" for _, p, _ in w.requests)

    # A rerun fetches only what failed.
    with Server(fake_wiki()) as server:
        server.wiki.always_500 = set()
        server.wiki.pages["Felis brokenis"] = {"extract": "== Description ==\nStriped.", "revid": 777}
        again = scrape(server, csv, tmp_path / "wiki")
        assert [p["titles"] for _, p, _ in server.wiki.requests] == ["Felis brokenis"]
    assert again.already == 8 and again.fetched == 1
    summary_json = json.loads((tmp_path / "wiki" / "summary.json").read_text())
    assert summary_json["statuses"] == {"ok": 6, "disambiguation": 1, "missing": 1, "ambiguous": 1}


def test_unreachable_wiki_is_a_clear_error():
    wiki = MediaWiki("http://127.0.0.1:9/w/api.php", user_agent=UA, max_retries=1, backoff_s=0.01)
    with pytest.raises(WikiRequestError, match=r"http://127\.0\.0\.1:9/w/api\.php: gave up after 2 attempts \(cannot reach"):
        wiki.page("Passer domesticus")


def test_killed_scrape_resumes_without_refetching(tmp_path):
    rows = [("Animalia", "Chordata", "Aves", "Passeriformes", "Passeridae", "Passer", f"sp{i}", "") for i in range(12)]
    csv = write_catalog(tmp_path / "catalog.csv", rows=rows)
    wiki = Wiki(pages={f"Passer sp{i}": {"extract": "== Description ==\nBrown.", "revid": i} for i in range(12)}, latency_s=0.15)
    out = tmp_path / "wiki"
    with Server(wiki) as server:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        args = ["wiki", "scrape", "--taxa", str(csv), "--out", str(out), "--api-url", server.url, "--user-agent", UA, "--workers", "1"]
        proc = subprocess.Popen([sys.executable, "-m", "biobench", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not (out / "pages.jsonl").exists() or len(lines(out / "pages.jsonl")) < 3):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        written = {r["binomial"] for r in lines(out / "pages.jsonl")}
        assert 3 <= len(written) < 12
        first_run = len(server.wiki.requests)
        summary = scrape(server, csv, out)
        again = [p["titles"] for _, p, _ in server.wiki.requests[first_run:]]
    assert not set(again) & written and len(again) == 12 - len(written)  # nothing fetched twice
    assert summary.already == len(written) and len({r["binomial"] for r in lines(out / "pages.jsonl")}) == 12


# The LLM filter


def pick_visual(prompt: str, n_images: int) -> str:
    """A fake filter LLM: returns the sentences of the prompt's text that mention a colour, plus one it made up."""
    if "Felis" in prompt:
        return "Sorry, I cannot help with that."
    text = prompt.split("Text:\n", 1)[1]
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", text) if re.search(r"grey|black|brown|orange|blue|pink", s)]
    sentences = [re.sub(r"^[A-Za-z ]+: ", "", s) for s in sentences]
    return "```json\n" + json.dumps({"sentences": sentences + ["It glows in the dark."]}) + "\n```"


def llm(server, **kw) -> LlmOptions:
    base = dict(base_url=server.url, parallel=4, max_rps=200.0, usd_per_m_input=1.0, usd_per_m_output=2.0, max_retries=1, backoff_s=0.01)
    return LlmOptions("local:fake-llm", **{**base, **kw})


def scraped(tmp_path) -> Path:
    csv = write_catalog(tmp_path / "catalog.csv")
    wiki = fake_wiki()
    wiki.always_500, wiki.script = set(), {}
    wiki.pages["Felis brokenis"] = {"extract": "== Description ==\nA striped cat.", "revid": 9}
    with Server(wiki) as server:
        scrape(server, csv, tmp_path / "wiki")
    return tmp_path / "wiki"


def test_filter_keeps_visual_sentences_validates_json_and_reports_parse_failures(tmp_path, mllm_server):
    wiki_dir = scraped(tmp_path)
    mllm_server.state.responder = pick_visual
    out = tmp_path / "filtered"
    summary = wiki_mod.filter_pages(wiki_dir, out, llm(mllm_server).build())
    records = {r["binomial"] + "/" + r["ranks"]["kingdom"]: r for r in lines(out / "descriptions.jsonl")}
    sparrow = records["Passer domesticus/Animalia"]
    assert sparrow["status"] == "ok" and sparrow["revid"] == 111
    assert sparrow["sentences"] == ["The male has a grey crown and a black bib.", "The female is plain brown with a pale eyestripe."]
    assert sparrow["dropped"] == ["It glows in the dark."]  # a sentence not in the page is never kept
    assert records["Felis brokenis/Animalia"]["status"] == "parse_failed"
    # Only ok pages are sent (not missing / disambiguation / ambiguous), and the prompt carries the page's text and ranks.
    assert len(mllm_server.state.records) == 6 and summary.sent == 6
    sent = next(r.text for r in mllm_server.state.records if "Passer domesticus" in r.text)
    assert "The male has a grey crown" in sent and "family Passeridae" in sent and '{"sentences": [' in sent
    report = json.loads((out / "summary.json").read_text())
    assert report["parse_failure_rate"] == pytest.approx(1 / 6) and report["statuses"]["parse_failed"] == 1
    assert report["cost_usd"] == pytest.approx(6 * (1000 * 1.0 + 10 * 2.0) / 1e6)
    # A rerun sends nothing: every page has its line (and its answer is cached).
    mllm_server.state.records.clear()
    assert wiki_mod.filter_pages(wiki_dir, out, llm(mllm_server).build()).statuses.total() == 0
    assert mllm_server.state.records == []


def test_filter_prompt_file_is_editable(tmp_path, mllm_server):
    wiki_dir = scraped(tmp_path)
    prompt = tmp_path / "my_prompt.txt"
    prompt.write_text('Only JSON {"sentences": [...]}. Organism: {name}.\nText:\n{text}')
    mllm_server.state.responder = lambda text, n: '{"sentences": []}'
    summary = wiki_mod.filter_pages(wiki_dir, tmp_path / "f", llm(mllm_server).build(), prompt=prompt)
    assert summary.statuses["no_visual"] == 6
    assert all(r.text.startswith("Only JSON") for r in mllm_server.state.records)


# Captions over webdataset shards


def jpeg(colour, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, tuple, bytes]]) -> Path:
    """A shard in TreeOfLife-10M's layout: KEY.jpg plus its text fields."""
    with tarfile.open(path, "w") as tar:
        for key, ranks, image in samples:
            k, p, c, o, f, g, s = ranks
            fields = {
                "jpg": image,
                "scientific_name.txt": f"{g} {s}".encode(),
                "taxonomic_name.txt": " ".join(ranks).encode(),
                "common_name.txt": b"",
                "taxonTag.txt": f"a photo of kingdom {k} phylum {p} class {c} order {o} family {f} genus {g} species {s}.".encode(),
                "sci.txt": f"a photo of {g} {s}.".encode(),
            }
            for ext, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def caption_inputs(tmp_path, mllm_server) -> tuple[str, Path, Path]:
    """Two shards, a filtered wiki directory and a format-examples CSV."""
    wiki_dir = scraped(tmp_path)
    mllm_server.state.responder = pick_visual
    wiki_mod.filter_pages(wiki_dir, tmp_path / "filtered", llm(mllm_server).build())
    sparrow, cardui, rosa = ROWS[0][:7], ROWS[5][:7], ROWS[3][:7]
    write_shard(
        tmp_path / "shard-000000.tar",
        [("u0", sparrow, jpeg("brown")), ("u1", cardui, jpeg("orange", (900, 600))), ("u2", rosa, jpeg("red"))],
    )
    write_shard(tmp_path / "shard-000001.tar", [("u3", sparrow, jpeg("grey")), ("u4", cardui, b"not a jpeg")])
    examples = tmp_path / "format_examples.csv"
    examples.write_text('class,description\nAves,"1. A wren cocks its barred tail."\nInsecta,"1. A beetle shines metallic green."\n')
    return str(tmp_path / "shard-{000000..000001}.tar"), tmp_path / "filtered", examples


def echo_caption(prompt: str, n_images: int) -> str:
    name = re.search(r'must name "(.+?)"', prompt).group(1)
    return f"  {name} shows  traits visible in {n_images} image. "


def test_captions_every_sample_gets_a_caption_or_a_recorded_failure(tmp_path, mllm_server):
    shards, filtered, examples = caption_inputs(tmp_path, mllm_server)
    mllm_server.state.reset()
    mllm_server.state.responder = echo_caption
    out = tmp_path / "captions"
    summary = gen.generate(gen.expand_shards(shards), out, llm(mllm_server).build(), wiki=filtered, examples=examples)
    assert summary.finished_shards == 2 and summary.statuses == {"captioned": 4, "failed": 1}
    table = pl.read_parquet(out / "uuid_caption_description" / "*.parquet").sort("uuid")
    assert table.columns == ["uuid", "caption", "description"]
    assert table["uuid"].to_list() == ["u0", "u1", "u2", "u3"]
    assert table["caption"][0] == "Passer domesticus shows traits visible in 1 image."  # whitespace normalised
    assert table["description"][0].startswith("The male has a grey crown")
    failed = {r["uuid"]: r for r in lines(out / "progress" / "shard-000001.jsonl")}["u4"]
    assert failed["caption"] is None and "image cannot be decoded" in failed["error"]
    # The prompt carries the taxon's description and its class's format example (checked at the server).
    prompts = {r.text.split('must name "')[1].split('"')[0]: r.text for r in mllm_server.state.records}
    assert len(mllm_server.state.records) == 4 and all(r.n_images == 1 for r in mllm_server.state.records)
    assert (
        "The male has a grey crown and a black bib." in prompts["Passer domesticus"]
        and "A wren cocks its barred tail." in prompts["Passer domesticus"]
    )
    assert (
        "Orange wings with black and white spots." in prompts["Vanessa cardui"]
        and "A beetle shines metallic green." in prompts["Vanessa cardui"]
    )
    assert (
        "Reference description" not in prompts["Rosa ambigua"] and "A fly agaric" in prompts["Rosa ambigua"]
    )  # no description; default examples
    done = json.loads((out / "progress" / "shard-000000.done.json").read_text())
    assert (
        done["captions"] == 3
        and done["failures"] == 0
        and done["cost_usd"] == pytest.approx(3 * 1020 / 1e6)
        and done["input_tokens"] == 3000
    )
    status = gen.status_table(out)
    assert re.search(r"shard-000001\s+2\s+1\s+1\s+", status)

    # A rerun skips the finished shard without reading it, and sends nothing new (the failure is not an API failure to retry).
    mllm_server.state.records.clear()
    again = gen.generate(gen.expand_shards(shards), out, llm(mllm_server).build(), wiki=filtered, examples=examples)
    assert again.skipped_shards == 1 and again.statuses == {"failed": 1} and mllm_server.state.records == []


def test_captions_resume_per_sample_and_stop_at_the_budget(tmp_path, mllm_server):
    shards, filtered, examples = caption_inputs(tmp_path, mllm_server)
    mllm_server.state.reset()
    mllm_server.state.responder = echo_caption
    out = tmp_path / "captions"
    mllm_server.state.script = ["401"]  # the first request fails for good: recorded, then redone by the rerun
    model = llm(mllm_server, parallel=1, max_usd=0.0015)  # $0.00102 per answer: the second crosses the budget, the third is not sent
    summary = gen.generate(
        gen.expand_shards(shards), out, model.build(), wiki=filtered, examples=examples, shard_workers=1, max_usd=model.max_usd
    )
    assert (
        summary.budget_stopped and summary.statuses == {"failed": 1, "captioned": 2} and summary.finished_shards == 1
    )  # shard 0, with its failure
    first = [r.query for r in mllm_server.state.records if r.mode == "ok"]
    mllm_server.state.records.clear()
    rest = gen.generate(gen.expand_shards(shards), out, llm(mllm_server).build(), wiki=filtered, examples=examples)
    resent = [r.query for r in mllm_server.state.records]
    assert not set(resent) & set(first)  # no caption paid twice
    assert rest.finished_shards == 2 and not rest.budget_stopped
    table = pl.read_parquet(out / "uuid_caption_description" / "*.parquet")
    assert sorted(table["uuid"].to_list()) == ["u0", "u1", "u2", "u3"]


def test_a_shard_that_is_not_a_tar_names_the_file(tmp_path, mllm_server):
    bad = tmp_path / "shard-000000.tar"
    bad.write_text("this is not a tar file\n" * 50)
    with pytest.raises(DataError, match=r"shard-000000\.tar is not a readable tar file"):
        check_tar(bad)
    rc = cli.main(
        ["captions", "generate", "--shards", str(bad), "--out", str(tmp_path / "c"), "--model", "local:x", "--base-url", mllm_server.url]
    )
    assert rc == 1 and mllm_server.state.records == []
    with pytest.raises(DataError, match=r"Shard .*shard-000009\.tar does not exist"):
        check_tar(tmp_path / "shard-000009.tar")


def test_shard_samples_group_by_key_like_webdataset(tmp_path):
    write_shard(tmp_path / "s.tar", [("a/u0", ROWS[0][:7], jpeg("red")), ("a/u1", ROWS[5][:7], jpeg("blue"))])
    samples = list(iter_samples(tmp_path / "s.tar"))
    assert [s["__key__"] for s in samples] == ["a/u0", "a/u1"]
    assert set(samples[0]) == {"__key__", "jpg", "scientific_name.txt", "taxonomic_name.txt", "common_name.txt", "taxontag.txt", "sci.txt"}


def test_an_unreachable_model_server_is_a_clear_error_naming_the_url(tmp_path, capsys):
    write_shard(tmp_path / "shard-000000.tar", [("u0", ROWS[0][:7], jpeg("red"))])
    args = ["captions", "generate", "--shards", str(tmp_path / "shard-000000.tar"), "--out", str(tmp_path / "c"),
            "--model", "local:x", "--base-url", "http://127.0.0.1:9/v1", "--max-retries", "0"]  # fmt: skip
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "Cannot reach the model server at http://127.0.0.1:9/v1" in err
    assert lines(tmp_path / "c" / "progress" / "shard-000000.jsonl") == []  # nothing recorded as failed: a rerun redoes it
