"""A fake MediaWiki `api.php` on 127.0.0.1 for the caption-pipeline tests (stdlib HTTP server in a thread).

It answers `action=query` with `titles` (prop=extracts|pageprops|info, redirects) or `prop=links`,
and `list=search`, in formatversion=2 JSON, from `pages` / `redirects` / `links` / `search`. Per
title, `script` lists failure modes consumed one per request ("429": with `Retry-After`, "500",
"maxlag"); `always_500` titles never succeed. Every request is recorded (monotonic time, params,
User-Agent); `latency_s` slows each answer (to kill a run mid-way).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Wiki:
    pages: dict[str, dict] = dataclasses.field(default_factory=dict)  # title -> {extract, revid, pageid, disambiguation}
    redirects: dict[str, str] = dataclasses.field(default_factory=dict)
    links: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    search: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    script: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    always_500: set[str] = dataclasses.field(default_factory=set)
    retry_after: str = "1"
    latency_s: float = 0.0
    requests: list[tuple[float, dict, str]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def page_requests(self, title: str) -> list[float]:
        """Times of extract requests for `title`."""
        return [t for t, p, _ in self.requests if p.get("titles") == title and "extracts" in p.get("prop", "")]


def _answer(wiki: Wiki, params: dict) -> tuple[int, dict, dict]:
    title = params.get("titles", params.get("srsearch", ""))
    with wiki.lock:
        mode = wiki.script[title].pop(0) if wiki.script.get(title) else ("500" if title in wiki.always_500 else "ok")
    if mode == "429":
        return 429, {"Retry-After": wiki.retry_after}, {"error": {"code": "ratelimited", "info": "slow down"}}
    if mode == "500":
        return 500, {}, {"error": {"code": "internal", "info": "boom"}}
    if mode == "maxlag":
        return 200, {"Retry-After": "0"}, {"error": {"code": "maxlag", "info": "lagged"}}
    if params.get("list") == "search":
        return 200, {}, {"query": {"search": [{"ns": 0, "title": t} for t in wiki.search.get(title, [])]}}
    if params.get("prop") == "links":
        return 200, {}, {"query": {"pages": [{"title": title, "links": [{"ns": 0, "title": t} for t in wiki.links.get(title, [])]}]}}
    query: dict = {}
    target = title
    if params.get("redirects") and title in wiki.redirects:
        target = wiki.redirects[title]
        query["redirects"] = [{"from": title, "to": target}]
    page = wiki.pages.get(target)
    if page is None:
        query["pages"] = [{"ns": 0, "title": target, "missing": True}]
    else:
        entry = {
            "pageid": page.get("pageid", 1),
            "ns": 0,
            "title": target,
            "lastrevid": page.get("revid", 1),
            "extract": page.get("extract", ""),
        }
        if page.get("disambiguation"):
            entry["pageprops"] = {"disambiguation": ""}
        query["pages"] = [entry]
    return 200, {}, {"batchcomplete": True, "query": query}


class Server:
    def __init__(self, wiki: Wiki | None = None):
        self.wiki = wiki or Wiki()
        state = self.wiki

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlparse(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                with state.lock:
                    state.requests.append((time.monotonic(), params, self.headers.get("User-Agent", "")))
                if state.latency_s:
                    time.sleep(state.latency_s)
                status, headers, body = _answer(state, params) if url.path == "/w/api.php" else (404, {}, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/w/api.php"
