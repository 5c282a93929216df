"""BioCAP retrieval: Recall@k against brute force and CLIP_benchmark's definition, skipped rows, download by URL with md5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biobench import ranking
from biobench.errors import DataError
from biobench.tasks import get_task
from biobench.tasks.bio_retrieval import recalls


def brute_force(sims, positives, k):
    """Rank every candidate by (-score, index) by hand; hit when a positive is in the first k."""
    out = []
    for q in range(sims.shape[0]):
        ranked = sorted(range(sims.shape[1]), key=lambda c: (-sims[q, c], c))[:k]
        out.append(float(any(positives[q, c] for c in ranked)))
    return np.array(out)


def clip_benchmark(sims, positives, k):
    """LAION CLIP_benchmark's recall_at_k: topk indices, hit when any positive is among them."""
    topk = torch.topk(torch.as_tensor(sims), k, dim=1)[1]
    nb_true = torch.nn.functional.one_hot(topk, num_classes=sims.shape[1]).sum(1) * torch.as_tensor(positives)
    return (nb_true.sum(1) > 0).float().numpy()


@pytest.mark.parametrize("seed", range(10))
def test_recall_equals_brute_force_with_ties_and_clip_benchmark_without(seed):
    rng = np.random.default_rng(seed)
    n_img, n_txt = 12, 30
    owner = rng.integers(0, n_img, size=n_txt)  # each caption's image; an image may have several captions
    positives = owner[None, :] == np.arange(n_img)[:, None]
    tied = rng.integers(0, 3, size=(n_img, n_txt)).astype(float)  # many ties
    smooth = rng.normal(size=(n_img, n_txt))
    for k in (1, 5, 10):
        assert np.array_equal(ranking.recall_hits(tied, positives, k), brute_force(tied, positives, k))
        assert np.array_equal(ranking.recall_hits(tied.T, positives.T, k), brute_force(tied.T, positives.T, k))
        assert np.array_equal(ranking.recall_hits(smooth, positives, k), clip_benchmark(smooth, positives, k))
        assert np.array_equal(ranking.recall_hits(smooth.T, positives.T, k), clip_benchmark(smooth.T, positives.T, k))
    # with ties, CLIP_benchmark's answer depends on topk's order; ours lies between the pessimistic and optimistic counts
    for k in (1, 5):
        ours = ranking.recall_hits(tied, positives, k)
        better = (tied[:, None, :] > tied[:, :, None]).sum(2)  # candidates strictly above each one
        geq = (tied[:, None, :] >= tied[:, :, None]).sum(2)
        optimistic = np.where(positives, better < k, False).any(1)
        pessimistic = np.where(positives, geq <= k, False).any(1)
        assert np.all(pessimistic <= ours) and np.all(ours <= optimistic)
    assert set(recalls(smooth[:, :12])) == {f"{d}@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}


def test_missing_image_and_bad_md5_rows_are_counted_skips(tmp_path, caplog):
    spec = get_task("cornell-bird-retrieval")
    spec.fixture(tmp_path)
    (tmp_path / "images" / "1003.jpg").unlink()
    (tmp_path / "images" / "1004.jpg").write_bytes(b"not the same image")
    ex = spec.read(spec.options(data=tmp_path))
    assert len(ex.images) == 22 and ex.skipped == {"image missing": 1, "md5 differs": 1}
    assert "1003: image missing" in caplog.text
    assert len(spec.read(spec.options(data=tmp_path, check_md5=False)).images) == 23
    (tmp_path / "cornell_bird.csv").write_text(",id,source_url,captions,md5\n0,1,u,,x\n")
    with pytest.raises(DataError, match="captions"):
        spec.read(spec.options(data=tmp_path))


def test_counted_skips_reach_the_stored_report_and_its_drill_down(tmp_path):
    import json

    from biobench import cli, report

    spec = get_task("cornell-bird-retrieval")
    spec.fixture(tmp_path / "d")
    (tmp_path / "d" / "images" / "1003.jpg").unlink()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 50\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n'
        f'[data]\ncornell-bird-retrieval = "{tmp_path / "d"}"\n'
    )
    assert cli.main(["run", str(cfg)]) == 0
    (row,) = report.load(tmp_path / "results" / "results.sqlite")
    assert json.loads(row["sub_scores"])["skipped"] == {"image missing": 1}
    html = tmp_path / "report.html"
    assert cli.main(["report", "--db", str(tmp_path / "results" / "results.sqlite"), "--format", "html", "--out", str(html)]) == 0
    assert "image missing" in html.read_text()


def test_download_fetches_every_listed_url_and_checks_md5(tmp_path):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    get_task("plantid-retrieval").fixture(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        target = tmp_path / "target"
        target.mkdir()
        text = (served / "plantID.csv").read_text().replace("https://example.org/asset/", f"{base}/images/").replace(",https", ",https")
        lines = text.splitlines()
        lines = [lines[0]] + [
            line.replace(f"{base}/images/{1000 + i}", f"{base}/images/{1000 + i}.jpg") for i, line in enumerate(lines[1:])
        ]
        (target / "plantID.csv").write_text("\n".join(lines) + "\n")
        get_task("plantid-retrieval").fetch(target)
        assert len(get_task("plantid-retrieval").read(get_task("plantid-retrieval").options(data=target)).images) == 24
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "plantID.csv").write_text(lines[0] + "\n" + lines[1].rsplit(",", 1)[0] + "," + "0" * 32 + "\n")
        with pytest.raises(DataError, match="1 of 1"):
            get_task("plantid-retrieval").fetch(bad)
    finally:
        server.shutdown()
    with pytest.raises(DataError, match="plantID.csv"):
        get_task("plantid-retrieval").fetch(tmp_path / "nothing")
