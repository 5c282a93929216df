"""Leaderboards from the results store: text table, CSV, JSON and a static HTML page.

- `json`: one object per experiment with exactly the keys `task, model, method, n_train,
  seed, score, ci_low, ci_high, n_test` (`model` is `ORG:CKPT`, `task` the registry name).
- `csv`: one row per experiment with those columns plus provenance-free details
  (n_train_actual, protocol, metric, seconds per stage, time).
- `table` / `html`: one row per (task, n_train, model, method), seeds averaged, ranked
  by score within each (task, n_train); `sd` is the spread across seeds and the CI is an
  interval for the seed-averaged score (`across_seed_interval`): it combines the
  test-set uncertainty (the mean per-seed bootstrap half-widths, each side separately)
  with the training-sample uncertainty (1.96 sd / sqrt(seeds)) in quadrature.
  Probe (cvml) and MLLM rows of a task are
  ranked together (their protocol ids share the task's part; an MLLM's adds
  `|mllm-<prompting>`), with the method shown as `mllm/single` or `mllm/multi`; when
  the database holds MLLM results, a `$/answer` column gives their cost per answer.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from biobench.errors import BiobenchError
from biobench.store import Store

JSON_KEYS = ("task", "model", "method", "n_train", "seed", "protocol", "metric", "score", "ci_low", "ci_high", "n_test")
CSV_KEYS = (
    "task", "model", "method", "n_train", "n_train_actual", "seed", "protocol", "metric", "score", "ci_low",
    "ci_high", "n_test", "seconds_embed", "seconds_fit", "seconds_score", "posix_time",
    "prompting", "cost_usd", "n_failed", "parse_rate",
)  # fmt: skip


def load(db: Path | str) -> list[dict]:
    """Every experiment row of the database at `db`, with `model` = ORG:CKPT."""
    db = Path(db)
    if not db.is_file():
        raise BiobenchError(f"No results database at {db}. Run `biobench run CONFIG.toml` first, or pass --db.")
    with Store(db, readonly=True) as store:
        rows = store.rows()
    for r in rows:
        r["model"] = f"{r['model_org']}:{r['model_ckpt']}"
    return rows


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps([{k: r[k] for k in JSON_KEYS} for r in rows], indent=2)


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def across_seed_interval(rs: Sequence[dict], z: float = 1.96) -> tuple[float | None, float | None]:
    """95% interval of the mean score over seeds (same task, model, n_train).

    Every seed is scored on the SAME test set, so test-set sampling error does not average
    out over seeds: it is the per-seed bootstrap half-width (averaged over seeds, lower and
    upper side separately). The training sample changes with the seed; its error in the
    mean is sd / sqrt(k). The two are independent and add in quadrature. With one seed the
    interval is that seed's bootstrap interval. The seed term uses the normal quantile: a
    t quantile with k - 1 = 1 degree of freedom (12.7) would make 2-seed sweeps useless, so
    read intervals from 2-3 seeds as approximate. Averaging the bounds (the previous rule)
    ignored the spread across seeds.
    """
    with_ci = [r for r in rs if r["ci_low"] is not None and r["ci_high"] is not None]
    if not with_ci:
        return None, None
    scores = [r["score"] for r in rs]
    mean = statistics.fmean(scores)
    below = statistics.fmean(r["score"] - r["ci_low"] for r in with_ci)
    above = statistics.fmean(r["ci_high"] - r["score"] for r in with_ci)
    seed_term = z * statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
    return mean - (below**2 + seed_term**2) ** 0.5, mean + (above**2 + seed_term**2) ** 0.5


def protocol_labels(rows: Sequence[dict]) -> dict[str, str]:
    """A readable name for each protocol id: the id plus the task options that set it apart from the
    task's other protocols in these rows (`newt/v1+3fa2c1 (include_clusters=['appearance'])`)."""
    options: dict[str, dict] = {}
    for r in rows:
        try:
            opts = json.loads(r.get("config") or "{}").get("task", {})
        except (TypeError, ValueError):
            opts = {}
        options.setdefault(r["protocol"], {k: v for k, v in opts.items() if k != "data"})
    labels = {}
    for proto, opts in options.items():
        task = base_protocol(proto).split("/")[0]
        siblings = [o for p, o in options.items() if base_protocol(p).split("/")[0] == task]
        differing = sorted(k for k in opts if any(o.get(k) != opts[k] for o in siblings))
        labels[proto] = proto + (f" ({', '.join(f'{k}={opts[k]!r}' for k in differing)})" if differing else "")
    return labels


def leaderboard(rows: Sequence[dict]) -> list[dict]:
    """Seed-averaged rows, ranked by score within each (task, n_train)."""
    names = protocol_labels(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["n_train"], r["model"], r["method"], r["protocol"]), []).append(r)
    out = []
    for (task, n_train, model, method, proto), rs in groups.items():
        scores = [r["score"] for r in rs]
        low, high = across_seed_interval(rs)
        costs = [r.get("cost_usd") for r in rs]
        out.append(
            {
                "task": task,
                "n_train": n_train,
                "model": model,
                "method": method if method != "mllm" else f"mllm/{rs[0].get('prompting') or 'single'}",
                "protocol": proto,
                "protocol_label": names[proto],
                "metric": rs[0]["metric"],
                "score": statistics.fmean(scores),
                "ci_low": low,
                "ci_high": high,
                "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "n_seeds": len(rs),
                "n_test": rs[0]["n_test"],
                "usd_per_answer": None if None in costs else sum(costs) / sum(r["n_test"] for r in rs),
            }
        )
    # -1 (all) sorts after every explicit size
    out.sort(key=lambda r: (r["task"], r["n_train"] < 0, r["n_train"], -r["score"], r["model"]))
    # Competition ranking: equal scores share a rank (1, 1, 3), so a tie never reads as an order.
    position, rank, prev, prev_score = 0, 0, None, None
    for r in out:
        group = (r["task"], r["n_train"], base_protocol(r["protocol"]))
        position = position + 1 if group == prev else 1
        if group != prev or not math.isclose(r["score"], prev_score, rel_tol=0, abs_tol=1e-12):
            rank = position
        prev, prev_score = group, r["score"]
        r["rank"] = rank
    return out


def base_protocol(protocol: str) -> str:
    """The task's part of a protocol id (an MLLM's adds `|mllm-...`)."""
    return protocol.split("|", 1)[0]


def _fmt_n(n: int) -> str:
    return "all" if n < 0 else str(n)


def _fmt_ci(r: dict) -> str:
    return "" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


TABLE_COLUMNS = ("task", "n_train", "rank", "model", "method", "metric", "score", "95% CI", "sd", "seeds", "n_test")


def _columns(board: Sequence[dict]) -> tuple[str, ...]:
    columns = TABLE_COLUMNS
    # The protocol only needs a column when the database mixes several (e.g. filtered NeWT runs).
    if len({(r["task"], base_protocol(r["protocol"])) for r in board}) > len({r["task"] for r in board}):
        columns = columns[:1] + ("protocol",) + columns[1:]
    if any(r["usd_per_answer"] is not None for r in board):
        columns = columns + ("$/answer",)
    return columns


def _cells(r: dict, columns: Sequence[str]) -> list[str]:
    cells = {
        "task": r["task"], "protocol": r["protocol_label"], "n_train": _fmt_n(r["n_train"]), "rank": str(r["rank"]),
        "model": r["model"], "method": r["method"], "metric": r["metric"], "score": f"{r['score']:.3f}",
        "95% CI": _fmt_ci(r), "sd": f"{r['sd']:.3f}", "seeds": str(r["n_seeds"]), "n_test": str(r["n_test"]),
        "$/answer": "" if r["usd_per_answer"] is None else f"{r['usd_per_answer']:.6f}",
    }  # fmt: skip
    return [cells[c] for c in columns]


def to_table(rows: Sequence[dict]) -> str:
    board = leaderboard(rows)
    if not board:
        return "No results yet."
    columns = _columns(board)
    body = [_cells(r, columns) for r in board]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)


def to_html(rows: Sequence[dict], title: str = "biobench leaderboard") -> str:
    board = leaderboard(rows)
    columns = _columns(board)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, columns)) + "</tr>" for r in board)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #001219; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 0.3rem 0.8rem; border-bottom: 1px solid #ccc; text-align: left; }}
th {{ background: #005f73; color: white; }}
tr:nth-child(even) td {{ background: #f4f1e8; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} experiments; scores averaged over seeds; 95% intervals combine the test-set bootstrap with the spread across seeds; equal scores share a rank; generated {html.escape(stamp)}.</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</body>
</html>
"""


FORMATS = {"table": to_table, "csv": to_csv, "json": to_json, "html": to_html}


def render(rows: Sequence[dict], fmt: str) -> str:
    if fmt not in FORMATS:
        raise BiobenchError(f"Unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    return FORMATS[fmt](rows)
