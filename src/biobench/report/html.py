"""The HTML report: one self-contained file (inline CSS, JS and data; no request of any kind).

Sections: the leaderboard (click a header to sort, type in the filter box to keep matching
models), per-task sub-scores, small-data curves (score vs n_train, mean +- sd across seeds,
one line per model; MLLMs dashed with their cost per answer), the Spearman correlation
between tasks across models (with the number of models under each coefficient) and a
provenance footer (commits, package versions, dates, hosts, GPUs). The curves are drawn
by Chart.js (MIT), vendored in `vendor/` and inlined; everything else is HTML tables.
"""

from __future__ import annotations

import html
import json
import statistics
import time
from collections.abc import Sequence
from importlib import resources

import numpy as np

from biobench.report import board as board_mod
from biobench.report import stdev

esc = html.escape


def _chartjs() -> str:
    return resources.files("biobench.report").joinpath("vendor/chart.umd.min.js").read_text()


def _script_json(obj) -> str:
    """JSON safe inside <script>: no '</script>' or '<!--' can appear."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt_n(n: int | None) -> str:
    return "" if n is None else ("all" if n < 0 else str(n))


def _cell_html(c: board_mod.Cell | None, missing: str = "–") -> str:
    if c is None:
        return f'<td data-sort="" class="missing">{esc(missing)}</td>'
    ci = "" if c.ci_low is None else f'<span class="ci">[{c.ci_low:.3f}, {c.ci_high:.3f}]</span>'
    cls = ' class="tied"' if c.tied else ""
    mark = '<span class="mark" title="best or not significantly worse than the best">*</span>' if c.tied else ""
    rank = "" if c.rank_low is None else f"rank {c.rank_low}-{c.rank_high}; "
    title = f"{rank}{c.n_seeds} seed(s); n_test {c.n_test}" + (f"; {c.note}" if c.note else "")
    return f'<td data-sort="{c.score:.6f}"{cls} title="{esc(title)}">{c.score:.3f}{mark} {ci}</td>'


def _leaderboard(board: board_mod.Board) -> str:
    heads = ['<th data-type="num" title="best and worst rank the paired tests allow">rank</th>',
             '<th data-type="text">model</th>', '<th data-type="text">method</th>']  # fmt: skip
    for c in board.columns:
        title = f"{c.metric}; n_train {_fmt_n(c.n_train)}; resampled: {c.units}" + (f"; {c.note}" if c.note else "")
        heads.append(
            f'<th data-type="num" title="{esc(title)}">{esc(c.label)}<br><small>{esc(c.metric)}, n={_fmt_n(c.n_train)}</small></th>'
        )
    if board.mean:
        heads.append('<th data-type="num" title="mean over all tasks, resampled jointly">mean</th>')
    body = []
    for key in board.rows:
        cells = [c.cells.get(key) for c in board.columns]
        main = board.mean.get(key) if board.mean else cells[0]
        rank = "" if main is None or main.rank_low is None else f"{main.rank_low}-{main.rank_high}"
        tds = [f'<td data-sort="{main.rank_low if main and main.rank_low else ""}">{esc(rank)}</td>',
               f"<td>{esc(key[0])}</td>", f"<td>{esc(key[1])}</td>"]  # fmt: skip
        tds += [_cell_html(c) for c in cells]
        if board.mean:
            present = sum(c is not None for c in cells)
            tds.append(_cell_html(board.mean.get(key), f"{present}/{len(cells)} tasks"))
        body.append(f'<tr data-model="{esc(key[0] + " " + key[1])}">' + "".join(tds) + "</tr>")
    return (
        '<div class="scroll"><table id="leaderboard"><thead><tr>' + "".join(heads) + "</tr></thead><tbody>\n"
        + "\n".join(body) + "\n</tbody></table></div>"
    )  # fmt: skip


def _sub_scores(board: board_mod.Board) -> str:
    parts = []
    for col in board.columns:
        keys = [k for k in board.rows if k in col.cells and col.cells[k].sub_scores]
        if not keys:
            continue
        levels = sorted({lv for k in keys for lv in col.cells[k].sub_scores})
        tables = []
        for lv in levels:
            names = sorted({n for k in keys for n in col.cells[k].sub_scores.get(lv, {})})
            field = _field(col.metric, [col.cells[k].sub_scores.get(lv, {}).get(n, {}) for k in keys for n in names])
            if field is None:
                continue
            head = "".join(f"<th>{esc(k[0])}<br><small>{esc(k[1])}</small></th>" for k in keys)
            rows = []
            for n in names:
                vals = [col.cells[k].sub_scores.get(lv, {}).get(n, {}).get(field) for k in keys]
                tds = "".join("<td>–</td>" if v is None else f"<td>{v:.3f}</td>" for v in vals)
                rows.append(f"<tr><th>{esc(n)}</th>{tds}</tr>")
            tables.append(
                f"<h4>{esc(lv)} <small>({esc(field)})</small></h4><div class='scroll'><table class='sub'>"
                f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            )
        if tables:
            parts.append(f"<details><summary>{esc(col.label)} (n_train {_fmt_n(col.n_train)})</summary>{''.join(tables)}</details>")
    return "".join(parts) or "<p>No sub-scores stored.</p>"


def _field(metric: str, entries: Sequence[dict]) -> str | None:
    """The sub-score field to show: the metric itself, else the first numeric field that is not a count."""
    fields = {f for e in entries for f in e}
    if metric in fields:
        return metric
    for f in ("f1", "accuracy", "value", "score"):
        if f in fields:
            return f
    rest = sorted(fields - {"n_test", "n_train", "positive_rate"})
    return rest[0] if rest else None


def curves(rows: Sequence[dict]) -> list[dict]:
    """Per task (and protocol): one series per model, points (n_train, mean, sd across seeds); 'all' at its actual size."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["task"], board_mod.base_protocol(r["protocol"]), r["model"], board_mod.method_label(r), r["n_train"])
        groups.setdefault(key, []).append(r)
    charts: dict[tuple, dict] = {}
    for (task, proto, model, method, n_train), rs in sorted(groups.items(), key=lambda kv: (kv[0][:4], kv[0][4] < 0, kv[0][4])):
        scores = [r["score"] for r in rs]
        x = n_train if n_train >= 0 else statistics.fmean(r.get("n_train_actual") or 0 for r in rs)
        costs = [r.get("cost_usd") for r in rs]
        chart = charts.setdefault((task, proto), {"task": task, "protocol": proto, "metric": rs[0]["metric"], "series": {}})
        s = chart["series"].setdefault(f"{model} ({method})", {"mllm": method.startswith("mllm"), "points": [], "usd": []})
        s["points"].append({"x": x, "y": statistics.fmean(scores), "sd": stdev(scores),
                            "label": _fmt_n(n_train), "seeds": len(scores)})  # fmt: skip
        if None not in costs:
            s["usd"].append(sum(costs) / max(1, sum(r["n_test"] for r in rs)))
    out = []
    for chart in charts.values():
        series = []
        for name, s in chart["series"].items():
            s["points"].sort(key=lambda p: p["x"])
            label = name + (f", ${statistics.fmean(s['usd']):.5f}/answer" if s["usd"] else "")
            series.append({"label": label, "mllm": s["mllm"], "points": s["points"]})
        out.append({**chart, "series": series})
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    avg = np.cumsum(counts) - (counts - 1) / 2.0
    return avg[inv]


def correlations(board: board_mod.Board) -> tuple[list[str], list[list[tuple[float | None, int]]]]:
    """Spearman's rho between every two columns across the models that have both, and how many models that is."""
    labels = [c.label for c in board.columns]
    out = []
    for a in board.columns:
        row = []
        for b in board.columns:
            keys = [k for k in a.cells if k in b.cells]
            rho = None
            if len(keys) >= 3:
                x = _ranks(np.array([a.cells[k].score for k in keys]))
                y = _ranks(np.array([b.cells[k].score for k in keys]))
                if x.std() > 0 and y.std() > 0:
                    rho = float(np.corrcoef(x, y)[0, 1])
            row.append((rho, len(keys)))
        out.append(row)
    return labels, out


def _heatmap(board: board_mod.Board) -> str:
    labels, matrix = correlations(board)
    if len(labels) < 2:
        return "<p>One task only: nothing to correlate.</p>"
    head = "".join(f"<th>{esc(lb)}</th>" for lb in labels)
    body = []
    for lb, row in zip(labels, matrix):
        tds = []
        for rho, n in row:
            if rho is None:
                tds.append(f'<td class="heat" title="{n} models: too few or constant">–<br><small>n={n}</small></td>')
                continue
            # Diverging: blue for positive, red for negative, white at 0.
            hue, light = (210, 100 - 45 * rho) if rho >= 0 else (5, 100 + 45 * rho)
            colour = "#fff" if light < 65 else "#001219"
            tds.append(f'<td class="heat" style="background:hsl({hue},70%,{light:.0f}%);color:{colour}" '
                       f'title="Spearman rho over {n} models">{rho:.2f}<br><small>n={n}</small></td>')  # fmt: skip
        body.append(f"<tr><th>{esc(lb)}</th>{''.join(tds)}</tr>")
    return (
        f'<div class="scroll"><table id="correlations"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def provenance(rows: Sequence[dict]) -> dict:
    """What the results came from: commits, package versions, dates, hosts and GPUs (each with its count)."""

    def count(values):
        out: dict[str, int] = {}
        for v in values:
            out[str(v)] = out.get(str(v), 0) + 1
        return dict(sorted(out.items()))

    packages: dict[str, set] = {}
    for r in rows:
        try:
            versions = json.loads(r.get("package_versions") or "{}")
        except (TypeError, ValueError):
            versions = {}
        for name, v in versions.items():
            packages.setdefault(name, set()).add(str(v))
    times = [r["posix_time"] for r in rows if r.get("posix_time")]
    fmt = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))
    return {
        "git_commits": count(r.get("git_commit") or "unknown" for r in rows),
        "packages": {k: sorted(v) for k, v in sorted(packages.items())},
        "dates": f"{fmt(min(times))} to {fmt(max(times))} UTC" if times else "unknown",
        "hosts": count(r.get("host") or "unknown" for r in rows),
        "gpus": count(r.get("gpu") or "none" for r in rows),
    }


def _footer(rows: Sequence[dict]) -> str:
    p = provenance(rows)

    def listing(d: dict) -> str:
        return ", ".join(f"<code>{esc(k)}</code> ({v})" for k, v in d.items()) or "none"

    pkgs = ", ".join(f"{esc(k)} {esc(' / '.join(v))}" for k, v in p["packages"].items()) or "unknown"
    return (
        f"<footer><h2>Provenance</h2><p><b>Commits</b>: {listing(p['git_commits'])}</p><p><b>Packages</b>: {pkgs}</p>"
        f"<p><b>Run</b>: {esc(p['dates'])}</p><p><b>Hosts</b>: {listing(p['hosts'])}</p><p><b>GPUs</b>: {listing(p['gpus'])}</p>"
        f"<p>Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p></footer>"
    )


CSS = """
body { font-family: system-ui, sans-serif; margin: 1rem auto; padding: 0 1rem; max-width: 80rem; color: #001219; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ccc; text-align: left; white-space: nowrap; vertical-align: top; }
#leaderboard th { background: #005f73; color: white; cursor: pointer; user-select: none; position: sticky; top: 0; }
#leaderboard th.asc::after { content: " \\25B2"; } #leaderboard th.desc::after { content: " \\25BC"; }
#leaderboard tr:nth-child(even) td { background: #f4f1e8; }
td.tied { font-weight: 600; } #leaderboard tr td.tied { background: #d8f3dc; }
.mark { color: #2d6a4f; } .ci { color: #555; font-size: 0.8em; font-weight: normal; } .missing { color: #888; }
#filter { font-size: 1rem; padding: 0.3rem 0.5rem; margin: 0.5rem 0; width: min(24rem, 100%); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 26rem), 1fr)); gap: 1rem; }
.chart { position: relative; height: 20rem; }
td.heat { text-align: center; min-width: 3rem; }
details { margin: 0.4rem 0; } summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 2rem; font-size: 0.85rem; color: #333; border-top: 1px solid #ccc; }
@media (max-width: 40rem) { body { padding: 0 0.4rem; } th, td { padding: 0.2rem 0.3rem; } }
"""

JS = r"""
(function () {
  const table = document.getElementById('leaderboard');
  const tbody = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach(function (th, i) {
    th.addEventListener('click', function () {
      const num = th.dataset.type === 'num';
      // Scores sort best first on the first click; ranks and names ascending.
      const asc = th.classList.contains('desc') || (!th.classList.contains('asc') && (!num || i === 0));
      heads.forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(asc ? 'asc' : 'desc');
      const rows = Array.from(tbody.rows);
      rows.sort(function (a, b) {
        const ca = a.cells[i], cb = b.cells[i];
        const va = ca.dataset.sort !== undefined ? ca.dataset.sort : ca.textContent;
        const vb = cb.dataset.sort !== undefined ? cb.dataset.sort : cb.textContent;
        if (va === '' && vb === '') return 0;
        if (va === '') return 1;
        if (vb === '') return -1;
        const d = num ? parseFloat(va) - parseFloat(vb) : va.localeCompare(vb);
        return asc ? d : -d;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    });
  });
  const filter = document.getElementById('filter');
  filter.addEventListener('input', function () {
    const q = filter.value.trim().toLowerCase();
    Array.from(tbody.rows).forEach(function (r) {
      r.hidden = q !== '' && r.dataset.model.toLowerCase().indexOf(q) < 0;
    });
  });
  if (typeof Chart === 'undefined') return;
  const errorBars = {
    id: 'errorBars',
    afterDatasetsDraw: function (chart) {
      const ctx = chart.ctx, y = chart.scales.y;
      chart.data.datasets.forEach(function (ds, i) {
        const meta = chart.getDatasetMeta(i);
        if (meta.hidden) return;
        meta.data.forEach(function (pt, j) {
          const p = ds.data[j];
          if (!p.sd) return;
          ctx.save(); ctx.strokeStyle = ds.borderColor; ctx.lineWidth = 1;
          ctx.beginPath(); ctx.moveTo(pt.x, y.getPixelForValue(p.y - p.sd)); ctx.lineTo(pt.x, y.getPixelForValue(p.y + p.sd));
          ctx.stroke(); ctx.restore();
        });
      });
    }
  };
  const data = JSON.parse(document.getElementById('curve-data').textContent);
  const box = document.getElementById('charts');
  data.forEach(function (chart, c) {
    const div = document.createElement('div'); div.className = 'chart';
    const canvas = document.createElement('canvas'); canvas.id = 'curve-' + c;
    div.appendChild(canvas); box.appendChild(div);
    const logx = chart.series.every(function (s) { return s.points.every(function (p) { return p.x > 0; }); });
    const datasets = chart.series.map(function (s, i) {
      const colour = 'hsl(' + Math.round(i * 137.5 % 360) + ', 65%, 40%)';
      return { label: s.label, data: s.points, showLine: true, borderColor: colour, backgroundColor: colour,
               borderDash: s.mllm ? [6, 4] : [], pointStyle: s.mllm ? 'triangle' : 'circle', pointRadius: 3 };
    });
    new Chart(canvas, {
      type: 'scatter', data: { datasets: datasets }, plugins: [errorBars],
      options: {
        animation: false, maintainAspectRatio: false,
        plugins: {
          title: { display: true, text: chart.task + ' (' + chart.metric + ')' },
          legend: { display: datasets.length <= 12, position: 'bottom', labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: function (ctx) {
            const p = ctx.raw; return ctx.dataset.label + ': n_train ' + p.label + ', ' + p.y.toFixed(3) +
              ' (sd ' + p.sd.toFixed(3) + ', ' + p.seeds + ' seeds)'; } } }
        },
        scales: { x: { type: logx ? 'logarithmic' : 'linear', title: { display: true, text: 'n_train' } },
                  y: { title: { display: true, text: chart.metric } } }
      }
    });
  });
})();
"""


def page(rows: Sequence[dict], board: board_mod.Board, title: str = "biobench leaderboard") -> str:
    n_models = len(board.rows)
    rule = (
        f"Cells: score (seeds averaged) with its 95% interval. <b>*</b> and green: the best model and every model not "
        f"significantly worse than it (one-sided paired bootstrap on the same test examples and the same resample "
        f"indices for every model, {board.n_resamples} resamples, Holm-corrected over the column, alpha {board.alpha}; "
        f"groups such as individuals or videos are resampled whole). Rank: the best and worst rank the paired tests "
        f"allow. The mean is shown only for models with every task; its interval resamples every task's test set jointly."
    )
    untested = [f"{c.label} ({c.note or 'no stored predictions to pair'})" for c in board.columns if not c.reps]
    if untested:
        rule += f" Not tested: {esc('; '.join(untested))}."
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p>{len(rows)} experiments, {len(board.columns)} tasks, {n_models} models.</p>
<h2>Leaderboard</h2>
<input id="filter" type="search" placeholder="Filter models" aria-label="Filter models">
{_leaderboard(board)}
<p><small>{rule}</small></p>
<h2>Sub-scores</h2>
{_sub_scores(board)}
<h2>Small-data curves</h2>
<p><small>Score against the number of training examples; points are means over seeds, bars one sd across seeds. Dashed
lines with triangles are multimodal LLMs (cost per answer in the legend).</small></p>
<div class="charts" id="charts"></div>
<h2>Which tasks predict which</h2>
<p><small>Spearman rank correlation of the leaderboard scores across the models that ran both tasks (n = how many).</small></p>
{_heatmap(board)}
{_footer(rows)}
<script type="application/json" id="curve-data">{_script_json(curves(rows))}</script>
<script>{_chartjs()}</script>
<script>{JS}</script>
</body>
</html>
"""
