"""Leaderboards from the results store: text table, CSV, JSON and one self-contained HTML page.

- The leaderboard (`board.build`): rows = models (with their method), columns = tasks at
  one `n_train` (all, else the largest run, unless `--n-train` picks one) plus a mean
  column. Cells have a 95% interval, a tie mark (the best model and every model not
  significantly worse: one-sided paired bootstrap, Holm) and a rank interval; the rules
  are in `biobench.report.board`.
- `json`: one object per experiment with exactly the keys `JSON_KEYS` (`model` is
  `ORG:CKPT`, `task` the registry name); `tied`, `rank_low`, `rank_high` are its
  leaderboard cell's (null for an experiment at another n_train, or not tested). With
  two or more tasks, one more object per model with a mean: `task = "mean"`,
  `metric = "mean"`, `seed` and `protocol` null, `n_test` the sum over tasks.
- `csv`: the same rows, with `CSV_KEYS` (provenance-free details: n_train_actual,
  seconds per stage, time, MLLM costs).
- `table`: the leaderboard (tie marks `*` on any terminal, colour only on a TTY), then
  every (task, n_train, model, method), seeds averaged, ranked by score within each
  (task, n_train) (`leaderboard`): `sd` is the spread across seeds and the CI an interval
  for the seed-averaged score (`across_seed_interval`): it combines the test-set
  uncertainty (the mean per-seed bootstrap half-widths, each side separately) with the
  training-sample uncertainty (1.96 sd / sqrt(seeds)) in quadrature. Probe (cvml) and
  MLLM rows of a task are ranked together (their protocol ids share the task's part; an
  MLLM's adds `|mllm-<prompting>`), with the method shown as `mllm/single` or
  `mllm/multi`; when the database holds MLLM results, a `$/answer` column gives their
  cost per answer.
- `html`: `biobench.report.html`: the leaderboard (sortable, filterable), per-task
  sub-scores, small-data curves, task correlations and a provenance footer, in one file.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from biobench.errors import BiobenchError
from biobench.report import board as board_mod
from biobench.store import Store

JSON_KEYS = (
    "task", "model", "method", "n_train", "seed", "protocol", "metric", "score", "ci_low", "ci_high", "n_test",
    "tied", "rank_low", "rank_high",
)  # fmt: skip
CSV_KEYS = (
    "task", "model", "method", "n_train", "n_train_actual", "seed", "protocol", "metric", "score", "ci_low",
    "ci_high", "n_test", "seconds_embed", "seconds_fit", "seconds_score", "posix_time",
    "prompting", "cost_usd", "n_failed", "parse_rate", "tied", "rank_low", "rank_high",
)  # fmt: skip
TIE = "*"
"""The tie mark in text: best, or not significantly worse than the best."""


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


def select(
    rows: Sequence[dict],
    *,
    tasks: Sequence[str] = (),
    models: Sequence[str] = (),
    n_train: int | None = None,
    methods: Sequence[str] = (),
) -> list[dict]:
    """The rows whose task, model (ORG:CKPT), n_train and method match; names may be shell globs (`openai:*`).

    A filter that matches nothing raises, naming what the database holds.
    """
    rows = list(rows)

    def keep(values: Sequence[str], field, what: str):
        nonlocal rows
        if not values:
            return
        held = sorted({str(field(r)) for r in rows})
        unknown = [v for v in values if not any(fnmatch.fnmatchcase(h, v) for h in held)]
        if unknown:
            raise BiobenchError(f"No results for {what} {', '.join(unknown)}; the database holds: {', '.join(held) or 'nothing'}.")
        rows = [r for r in rows if any(fnmatch.fnmatchcase(str(field(r)), v) for v in values)]

    keep(tasks, lambda r: r["task"], "task")
    keep(models, lambda r: r["model"], "model")
    if methods:
        held = sorted({r["method"] for r in rows} | {board_mod.method_label(r) for r in rows})
        unknown = [m for m in methods if m not in held]
        if unknown:
            raise BiobenchError(f"No results for method {', '.join(unknown)}; the database holds: {', '.join(held)}.")
        rows = [r for r in rows if r["method"] in methods or board_mod.method_label(r) in methods]
    if n_train is not None:
        held = sorted({r["n_train"] for r in rows})
        if n_train not in held:
            raise BiobenchError(f"No results at n_train={n_train}; the database holds n_train {', '.join(map(str, held))} (-1 = all).")
        rows = [r for r in rows if r["n_train"] == n_train]
    return rows


def build(rows: Sequence[dict], db: Path | str | None = None, **kwargs) -> board_mod.Board:
    """The leaderboard of `rows`, with paired tests on the predictions in `db` (see `biobench.report.board`)."""
    names = protocol_labels(rows)
    protocols: dict[str, set] = {}
    for r in rows:
        protocols.setdefault(r["task"], set()).add(base_protocol(r["protocol"]))
    # A column is named by its task, and by its protocol only where a task has several.
    labels = {p: (names.get(p, p) if len(protocols[t]) > 1 else t) for t, ps in protocols.items() for p in ps}
    return board_mod.build(rows, db, labels=labels, **kwargs)


def annotated(rows: Sequence[dict], board: board_mod.Board | None = None) -> list[dict]:
    """Experiment rows with their leaderboard cell's tie flag and rank interval, then one mean row per model with a mean."""
    board = board if board is not None else build(rows)
    cols = {(c.task, c.protocol, c.n_train): c for c in board.columns}
    out = []
    for r in rows:
        col = cols.get((r["task"], base_protocol(r["protocol"]), r["n_train"]))
        cell = col.cells.get((r["model"], board_mod.method_label(r))) if col else None
        out.append({**r, "tied": cell.tied if cell else None, "rank_low": cell.rank_low if cell else None,
                    "rank_high": cell.rank_high if cell else None})  # fmt: skip
    n_trains = {c.n_train for c in board.columns}
    mean_n_train = n_trains.pop() if len(n_trains) == 1 else None
    for (model, method), cell in board.mean.items():
        out.append({
            "task": "mean", "model": model, "method": method, "n_train": mean_n_train, "seed": None, "protocol": None,
            "metric": "mean", "score": cell.score, "ci_low": cell.ci_low, "ci_high": cell.ci_high, "n_test": cell.n_test,
            "tied": cell.tied, "rank_low": cell.rank_low, "rank_high": cell.rank_high,
        })  # fmt: skip
    return out


def to_json(rows: Sequence[dict], board: board_mod.Board | None = None) -> str:
    return json.dumps([{k: r.get(k) for k in JSON_KEYS} for r in annotated(rows, board)], indent=2)


def to_csv(rows: Sequence[dict], board: board_mod.Board | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(annotated(rows, board))
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
    seed_term = z * stdev(scores) / len(scores) ** 0.5
    return mean - (below**2 + seed_term**2) ** 0.5, mean + (above**2 + seed_term**2) ** 0.5


def stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (0 for fewer than two values): `statistics.stdev` to within rounding, without its
    exact fractions (thousands of cells are reported)."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


def protocol_labels(rows: Sequence[dict]) -> dict[str, str]:
    """A readable name for each protocol id: the id plus the task options that set it apart from the
    task's other protocols in these rows (`newt/v1+3fa2c1 (include_clusters=['appearance'])`)."""
    options: dict[str, dict] = {}
    for r in rows:
        if r["protocol"] in options:  # the first row of a protocol names its options
            continue
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
                "sd": stdev(scores),
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


BOLD_GREEN, DIM, RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"


def _rank(cell) -> str:
    if cell is None or cell.rank_low is None:
        return ""
    return str(cell.rank_low) if cell.rank_low == cell.rank_high else f"{cell.rank_low}-{cell.rank_high}"


def board_table(board: board_mod.Board, tty: bool = False) -> str:
    """The leaderboard as text: a row per model, a column per task (and the mean), tie marks and rank intervals."""
    if not board.columns:
        return "No results yet."
    heads = [f"{c.label} ({_fmt_n(c.n_train)})" for c in board.columns] + (["mean"] if board.mean else [])
    header = ["rank", "model", "method", *heads]
    body, marks = [], []
    for key in board.rows:
        cells = [c.cells.get(key) for c in board.columns]
        if board.mean:
            mean = board.mean.get(key)
            present = sum(c is not None for c in cells)
            cells.append(mean if mean is not None else f"({present}/{len(board.columns)} tasks)")
        rank_of = board.mean.get(key) if board.mean else cells[0]
        texts, mark = [], []
        for c in cells:
            if c is None or isinstance(c, str):
                texts.append(c or "-")
                mark.append(False)
                continue
            ci = "" if c.ci_low is None else f" [{c.ci_low:.3f}, {c.ci_high:.3f}]"
            texts.append(f"{c.score:.3f}{TIE if c.tied else ' '}{ci}")
            mark.append(bool(c.tied))
        body.append([_rank(rank_of), key[0], key[1], *texts])
        marks.append([False, False, False, *mark])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def fmt(cells, flags=None):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            text = c.ljust(w)
            if tty and flags is not None and flags[i]:
                text = BOLD_GREEN + text + RESET
            out.append(text)
        return "  ".join(out).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r, f) for r, f in zip(body, marks)]
    legend = (
        f"{TIE} best, or not significantly worse than the best (one-sided paired bootstrap, Holm, alpha {board.alpha}, "
        f"{board.n_resamples} resamples); rank = best and worst rank the paired tests allow; mean only over all "
        f"{len(board.columns)} tasks."
    )
    untested = sorted({(c.label, c.note or "no stored predictions to pair") for c in board.columns if not c.reps})
    if untested:
        legend += " Not tested: " + "; ".join(f"{label} ({why})" for label, why in untested) + "."
    lines.append(DIM + legend + RESET if tty else legend)
    return "\n".join(lines)


def to_table(rows: Sequence[dict], board: board_mod.Board | None = None, tty: bool = False) -> str:
    long = leaderboard(rows)
    if not long:
        return "No results yet."
    board = board if board is not None else build(rows)
    columns = _columns(long)
    body = [_cells(r, columns) for r in long]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(columns)]
    lines = ["Leaderboard", board_table(board, tty), "", "Every n_train (seeds averaged)"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)


def to_html(rows: Sequence[dict], board: board_mod.Board | None = None, title: str = "biobench leaderboard") -> str:
    from biobench.report import html

    return html.page(rows, board if board is not None else build(rows), title=title)


FORMATS = {"table": to_table, "csv": to_csv, "json": to_json, "html": to_html}


def render(rows: Sequence[dict], fmt: str, db: Path | str | None = None, *, tty: bool = False, **board_kwargs) -> str:
    """`rows` in format `fmt`; with `db`, the leaderboard's paired tests read its stored predictions."""
    if fmt not in FORMATS:
        raise BiobenchError(f"Unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    board = build(rows, db, **board_kwargs)
    if fmt == "table":
        return to_table(rows, board, tty=tty)
    return FORMATS[fmt](rows, board)
