"""Leaderboard aggregation, report formats on hand-made rows, and progress reporting."""

from __future__ import annotations

import json
import logging

import pytest

from biobench import report
from biobench.progress import Progress, format_seconds


def row(model, n_train, seed, score, protocol="newt/v1", task="newt"):
    return {
        "task": task, "model": model, "method": "cvml", "n_train": n_train, "n_train_actual": max(n_train, 20),
        "seed": seed, "protocol": protocol, "metric": "accuracy", "score": score, "ci_low": score - 0.1,
        "ci_high": score + 0.1, "n_test": 100, "seconds_embed": 1.0, "seconds_fit": 2.0, "seconds_score": 0.1,
        "posix_time": 0.0,
    }  # fmt: skip


ROWS = [
    row("a:x", 4, 0, 0.60), row("a:x", 4, 1, 0.70),
    row("b:y", 4, 0, 0.80), row("b:y", 4, 1, 0.90),
    row("a:x", -1, 0, 0.95), row("b:y", -1, 0, 0.85),
]  # fmt: skip


def test_leaderboard_averages_seeds_and_ranks_within_task_and_n_train():
    board = report.leaderboard(ROWS)
    assert [(r["n_train"], r["model"], r["rank"]) for r in board] == [(4, "b:y", 1), (4, "a:x", 2), (-1, "a:x", 1), (-1, "b:y", 2)]
    b4 = board[0]
    assert b4["score"] == pytest.approx(0.85) and b4["n_seeds"] == 2
    assert b4["sd"] == pytest.approx(0.0707, abs=1e-3)
    # Test-set half-width 0.1 each side, seed term 1.96 * 0.0707 / sqrt(2) = 0.098, in quadrature: 0.140.
    assert (b4["ci_low"], b4["ci_high"]) == (pytest.approx(0.85 - 0.1400, abs=1e-4), pytest.approx(0.85 + 0.1400, abs=1e-4))
    one_seed = board[2]  # a single seed keeps its own bootstrap interval
    assert (one_seed["ci_low"], one_seed["ci_high"]) == (pytest.approx(0.85), pytest.approx(1.05))


def test_table_shows_all_and_protocol_only_when_mixed():
    table = report.to_table(ROWS)
    assert "all" in table.splitlines()[-1] and "protocol" not in table
    mixed = report.to_table([*ROWS, row("a:x", 4, 0, 0.5, protocol="newt/v1+abc")]).splitlines()
    # The leaderboard comes first (a column per task and protocol), then every n_train with its header.
    header = mixed[mixed.index("Every n_train (seeds averaged)") + 1]
    assert "protocol" in header and any("newt/v1+abc" in line for line in mixed)


def test_mixed_protocols_are_named_by_the_options_that_differ():
    def with_options(r, **opts):
        return {**r, "config": json.dumps({"task": {"data": "/d", "tasks": [], **opts}})}

    rows = [with_options(r, include_clusters=[]) for r in ROWS]
    rows.append(with_options(row("a:x", 4, 0, 0.5, protocol="newt/v1+abc"), include_clusters=["appearance"]))
    table = report.to_table(rows)
    assert "newt/v1+abc (include_clusters=['appearance'])" in table and "newt/v1 (include_clusters=[])" in table
    assert "tasks=" not in table and "data=" not in table  # options shared by every protocol are left out


def test_json_has_exactly_the_documented_keys_and_csv_the_header():
    data = json.loads(report.to_json(ROWS))
    assert [list(d) for d in data] == [list(report.JSON_KEYS)] * len(ROWS)
    assert report.to_csv(ROWS).splitlines()[0] == ",".join(report.CSV_KEYS)


def test_html_escapes_and_render_rejects_unknown_formats():
    page = report.to_html([row("<script>:x", 4, 0, 0.5)])
    # The page has its own (inline) scripts; a model name is never one.
    assert "<script>:x" not in page and "&lt;script&gt;:x" in page
    with pytest.raises(Exception, match="Unknown report format"):
        report.render(ROWS, "xml")


def test_progress_logs_lines_off_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="biobench.progress"):
        with Progress(100, "embed newt", "images", every_s=0.0, tty=False) as bar:
            bar.update(25)
            bar.update(75)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("embed newt: 25/100 images (25.0%)") and "images/s" in lines[0] and "left" in lines[0]
    assert "done in" in lines[-1]


def test_progress_is_quiet_between_intervals(caplog):
    with caplog.at_level(logging.INFO, logger="biobench.progress"):
        bar = Progress(1000, "x", every_s=3600, tty=False)
        for _ in range(1000):
            bar.update(1)
    assert caplog.records == []


def test_format_seconds():
    assert [format_seconds(s) for s in (5, 65, 3700)] == ["5s", "1m05s", "1h01m"]
