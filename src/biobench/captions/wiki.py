"""Wikipedia visual descriptions per taxon: `scrape` (MediaWiki API -> pages.jsonl) and `filter_pages` (LLM -> descriptions.jsonl).

pages.jsonl has one line per unique 7-rank taxon: `key` (hash of the ranks), `ranks`, `binomial`,
`status` (ok, missing, disambiguation, ambiguous, error), `title`, `pageid`, `revid`,
`redirected_from`, `intro`, `sections` (the visual ones: heading, level, text), `headings` (all),
`candidates` (a disambiguation page's links, a missing page's search hits, or the page an
ambiguous binomial reached), `resolved_by` (the rank whose name on the page told two taxa with
one binomial apart), `error`, `fetched_at`. A rerun skips every taxon with a line whose status is
not `error`, so a killed or interrupted run resumes without refetching.

descriptions.jsonl has one line per ok taxon: `key`, `ranks`, `binomial`, `status` (ok, no_visual,
no_text, parse_failed, failed), `description` (the kept sentences), `sentences`, `dropped` (sentences
the model returned that are not in the page: never kept), `revid`, `error`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from biobench.captions import jsonl
from biobench.captions.mediawiki import MediaWiki, WikiRequestError, split_sections, visual_sections
from biobench.captions.taxa import RANKS, Taxon, ambiguous_binomials, read_taxa
from biobench.errors import DataError

logger = logging.getLogger(__name__)

PAGES = "pages.jsonl"
DESCRIPTIONS = "descriptions.jsonl"
FINAL = frozenset({"ok", "missing", "disambiguation", "ambiguous"})


@dataclasses.dataclass
class ScrapeSummary:
    out: Path
    taxa: int
    already: int
    fetched: int
    statuses: Counter
    requests: int
    retries: int
    interrupted: bool = False

    def line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (f"{self.taxa} taxa: {self.already} already in {self.out / PAGES}, {self.fetched} fetched now ({counts or 'none'}); "
                f"{self.requests} requests, {self.retries} retries" + ("; interrupted (rerun to resume)" if self.interrupted else "."))  # fmt: skip


def resolve(group: list[Taxon], text: str) -> dict[str, str]:
    """Taxon key -> the most specific rank (family ... kingdom) whose name, unique within the group, the page text names."""
    low = text.lower()
    hits = {}
    for t in group:
        for i in (4, 3, 2, 1, 0):
            name = t.ranks[i]
            if name and all(o.ranks[i] != name for o in group if o is not t) and re.search(rf"\b{re.escape(name.lower())}\b", low):
                hits[t.key] = RANKS[i]
                break
    return hits


def fetch_group(wiki: MediaWiki, binomial: str, group: list[Taxon]) -> list[dict]:
    """Lines for the taxa sharing one binomial (one page fetched for all of them)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    base = [{"key": t.key, "ranks": t.rank_dict(), "binomial": binomial, "common": t.common, "fetched_at": now, "api_url": wiki.api_url}
            for t in group]  # fmt: skip
    try:
        page = wiki.page(binomial)
        candidates = wiki.search(binomial) if page.missing else wiki.links(page.title) if page.disambiguation else []
    except WikiRequestError as err:
        return [{**b, "status": "error", "error": str(err)} for b in base]
    intro, sections = split_sections(page.extract)
    common = {"title": page.title, "pageid": page.pageid, "revid": page.revid, "redirected_from": page.redirected_from,
              "intro": intro, "sections": [dataclasses.asdict(s) for s in visual_sections(sections)],
              "headings": [s.heading for s in sections], "candidates": candidates, "resolved_by": None, "error": None}  # fmt: skip
    status = "missing" if page.missing else "disambiguation" if page.disambiguation else "ok"
    lines = [{**b, **common, "status": status} for b in base]
    if status == "ok" and len(group) > 1:
        hits = resolve(group, page.extract)
        winner = next(iter(hits)) if len(hits) == 1 else None
        for line in lines:
            if line["key"] == winner:
                line["resolved_by"] = hits[winner]
            else:
                why = "names another taxon of this binomial" if winner else ("names several of them" if hits else "names none of their distinguishing ranks")  # fmt: skip
                line.update(status="ambiguous", candidates=[page.title], error=f"{len(group)} taxa share the binomial {binomial}; page {page.title!r} {why}")  # fmt: skip
    return lines


def scrape(taxa_csv: Path, out: Path, *, api_url: str, user_agent: str, workers: int = 2, max_rps: float = 5.0, max_retries: int = 5,
           backoff_s: float = 1.0, max_backoff_s: float = 60.0, limit: int | None = None) -> ScrapeSummary:  # fmt: skip
    """Fetch every taxon of `taxa_csv` not yet in OUT/pages.jsonl; see the module docstring."""
    from biobench.progress import Progress

    taxa, skipped = read_taxa(taxa_csv)
    if skipped:
        logger.info("%s: %d row(s) without genus or species skipped.", taxa_csv, skipped)
    if limit is not None:
        taxa = taxa[:limit]
    path = out / PAGES
    done = {r["key"] for r in jsonl.read_lines(path) if r.get("status") in FINAL}
    ambiguous = ambiguous_binomials(taxa)
    groups: dict[str, list[Taxon]] = {}
    for t in taxa:
        groups.setdefault(t.binomial, []).append(t)
    todo = [(b, g) for b, g in groups.items() if any(t.key not in done for t in g)]
    wiki = MediaWiki(api_url, user_agent=user_agent, max_rps=max_rps, max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)  # fmt: skip
    summary = ScrapeSummary(out, len(taxa), sum(t.key in done for t in taxa), 0, Counter(), 0, 0)
    logger.info("%d taxa (%d binomials shared by several), %d already fetched, %d to fetch.", len(taxa), len(ambiguous), summary.already, len(taxa) - summary.already)  # fmt: skip
    progress = Progress(len(todo), "wiki scrape", "pages")
    pending: set = set()
    executor = ThreadPoolExecutor(max(1, workers))
    try:
        with jsonl.Appender(path) as sink:
            queue = iter(todo)
            while True:
                while len(pending) < 2 * max(1, workers):  # a bounded window: millions of taxa never sit in memory as futures
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending.add(executor.submit(fetch_group, wiki, *nxt))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    for line in future.result():
                        if line["key"] not in done:
                            sink.write(line)
                            summary.fetched += 1
                            summary.statuses[line["status"]] += 1
                    progress.update()
    except KeyboardInterrupt:
        summary.interrupted = True
        for future in pending:
            future.cancel()
    finally:
        executor.shutdown(wait=not summary.interrupted, cancel_futures=True)
        progress.close()
        summary.requests, summary.retries = wiki.requests, wiki.retries
    _write_summary(out, path)
    return summary


def _write_summary(out: Path, path: Path) -> None:
    latest = {r["key"]: r for r in jsonl.read_lines(path)}
    counts = Counter(r.get("status") for r in latest.values())
    (out / "summary.json").write_text(json.dumps({"taxa": len(latest), "statuses": dict(counts)}, indent=2) + "\n")


# The LLM filter


@dataclasses.dataclass
class FilterSummary:
    out: Path
    sent: int = 0
    statuses: Counter = dataclasses.field(default_factory=Counter)
    dropped: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    budget_stopped: bool = False

    @property
    def parse_failure_rate(self) -> float | None:
        answered = sum(n for s, n in self.statuses.items() if s in ("ok", "no_visual", "parse_failed"))
        return self.statuses["parse_failed"] / answered if answered else None

    def to_json(self) -> dict:
        return {"sent": self.sent, "statuses": dict(self.statuses), "parse_failure_rate": self.parse_failure_rate,
                "dropped_sentences": self.dropped, "cost_usd": self.cost_usd, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "budget_stopped": self.budget_stopped}  # fmt: skip

    def line(self) -> str:
        rate = self.parse_failure_rate
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (f"wiki filter: {counts or 'nothing new'}; parse failures {'-' if rate is None else f'{100 * rate:.1f}%'}; "
                f"{self.dropped} returned sentence(s) not in the page dropped; ${self.cost_usd:.4f}, "
                f"{self.input_tokens:,} in / {self.output_tokens:,} out tokens" + ("; budget reached (rerun to resume)" if self.budget_stopped else ""))  # fmt: skip


def page_text(record: dict, max_chars: int) -> str:
    """The text the filter reads: the visual sections (headed), else the lead; cut at a sentence end near `max_chars`."""
    parts = [f"{s['heading']}: {s['text']}" for s in record.get("sections") or []] or [record.get("intro") or ""]
    text = "\n\n".join(p for p in parts if p.strip()).strip()
    if len(text) > max_chars:
        cut = text.rfind(". ", 0, max_chars)
        text = text[: cut + 1 if cut > max_chars // 2 else max_chars]
    return text


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def parse_filter_answer(text: str | None) -> list[str] | None:
    """The `sentences` list of a JSON answer (a ```json fence and text around the object allowed), or None if invalid."""
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    sentences = obj.get("sentences") if isinstance(obj, dict) else None
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        return None
    return [s.strip() for s in sentences if s.strip()]


def filter_pages(in_dir: Path, out: Path, model, *, prompt: Path | None = None, max_chars: int = 6000, max_usd: float | None = None) -> FilterSummary:  # fmt: skip
    """Ask the LLM, for every ok page of IN/pages.jsonl not yet in OUT/descriptions.jsonl, which sentences describe appearance."""
    from biobench.captions.llm import fill, open_client, read_prompt, stream
    from biobench.mllm.client import BudgetExhausted
    from biobench.progress import Progress

    pages_path = in_dir / PAGES
    if not pages_path.exists():
        raise DataError(f"{pages_path} does not exist: run `biobench wiki scrape --out {in_dir}` first (or point --in at its output).")
    template = read_prompt(prompt, "filter.txt")
    pages = {r["key"]: r for r in jsonl.read_lines(pages_path) if r.get("status") == "ok"}
    path = out / DESCRIPTIONS
    done = {r["key"] for r in jsonl.read_lines(path) if r.get("status") != "failed"}
    todo = [r for k, r in pages.items() if k not in done]
    summary = FilterSummary(out)
    progress = Progress(len(todo), "wiki filter", "pages")

    def build(record: dict):
        text = page_text(record, max_chars)
        if not text:
            return None
        ranks = ", ".join(f"{k} {v}" for k, v in record["ranks"].items())
        return [{"role": "user", "content": fill(template, name=record["binomial"], ranks=ranks, text=text)}]

    out.mkdir(parents=True, exist_ok=True)
    with open_client(model, out, max_usd) as client, jsonl.Appender(path) as sink:

        def on_answer(record: dict, answer) -> None:
            line = {"key": record["key"], "ranks": record["ranks"], "binomial": record["binomial"], "revid": record.get("revid"),
                    "description": "", "sentences": [], "dropped": [], "error": None}  # fmt: skip
            if answer is None:
                line["status"] = "no_text"
            elif answer.text is None:
                line.update(status="failed", error=answer.error)
            else:
                if not answer.cached:  # what this run paid; cached answers were paid (and counted) before
                    summary.sent += 1
                    summary.cost_usd += answer.cost_usd or 0.0
                    summary.input_tokens += answer.input_tokens
                    summary.output_tokens += answer.output_tokens
                sentences = parse_filter_answer(answer.text)
                if sentences is None:
                    line.update(status="parse_failed", error=f"not a JSON object with a 'sentences' list of strings: {answer.text[:200]!r}")
                else:
                    source = _norm(page_text(record, max_chars))
                    kept = [s for s in sentences if _norm(s) in source]
                    line.update(sentences=kept, dropped=[s for s in sentences if _norm(s) not in source], description=" ".join(kept))
                    line["status"] = "ok" if kept else "no_visual"
                    summary.dropped += len(line["dropped"])
            summary.statuses[line["status"]] += 1
            sink.write(line)
            progress.update()

        try:
            stream(client, todo, build, on_answer)
        except BudgetExhausted as err:
            logger.warning("%s", err)
            summary.budget_stopped = True
        finally:
            progress.close()
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary
