"""A small, polite MediaWiki API client (stdlib HTTP): rate limit, bounded retries, plain-text sections.

Wikimedia's API etiquette: a descriptive User-Agent with a contact, requests in series or at a
modest rate, `maxlag` so the client backs off when the database replicas lag. Here:

- every request starts at least 1/`max_rps` seconds after the previous one (all threads together);
- 429 and 5xx answers, a `maxlag` error, timeouts and refused connections are retried at most
  `max_retries` times, waiting the server's Retry-After (seconds or an HTTP date; capped) or an
  exponential backoff with jitter; then a `WikiRequestError` names the URL and the last reason;
- other errors (400, 403, an API error code) fail at once.

Pages come from `action=query&prop=extracts|pageprops|info` with `explaintext` and
`exsectionformat=wiki` (plain text with `== Heading ==` lines; no HTML scraping, no wikitext
parser needed), `redirects=1` (the redirect is recorded), `ppprop=disambiguation` (disambiguation
pages are flagged, their links kept as candidates) and `lastrevid` (Wikipedia is not versioned
otherwise: the revision id says which text a description came from).
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from biobench.errors import BiobenchError

logger = logging.getLogger(__name__)

DEFAULT_API = "https://en.wikipedia.org/w/api.php"
MAX_RETRY_AFTER_S = 300.0
VISUAL_KEYWORDS = ("description", "morphology", "appearance", "identification", "feature", "characteristic",
                   "physical", "structure", "anatomy", "coloration", "colouration", "plumage")  # fmt: skip
"""Section headings (lower-cased substrings) that hold visual descriptions; BioCAP's list plus anatomy/colouration/plumage."""

_HEADING = re.compile(r"^(={2,6})\s*(.+?)\s*\1\s*$", re.MULTILINE)


class WikiRequestError(BiobenchError):
    """A MediaWiki request failed for good (after its retries, or at once for a non-retryable error)."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


@dataclasses.dataclass(frozen=True)
class Section:
    level: int
    heading: str
    text: str


@dataclasses.dataclass(frozen=True)
class Page:
    query: str
    title: str | None = None
    pageid: int | None = None
    revid: int | None = None
    redirected_from: str | None = None
    missing: bool = False
    disambiguation: bool = False
    extract: str = ""


def split_sections(extract: str) -> tuple[str, list[Section]]:
    """(lead text, sections in order) of a plain-text extract with `== Heading ==` lines."""
    matches = list(_HEADING.finditer(extract))
    intro = extract[: matches[0].start()].strip() if matches else extract.strip()
    sections = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(extract)
        sections.append(Section(len(m.group(1)), m.group(2).strip(), extract[m.end() : end].strip()))
    return intro, sections


def visual_sections(sections: list[Section], keywords=VISUAL_KEYWORDS) -> list[Section]:
    """Sections whose heading names a visual topic, with their subsections (an empty heading-only section is dropped)."""
    keep, inside = [], None
    for s in sections:
        if inside is not None and s.level > inside:
            keep.append(s)
            continue
        inside = None
        if any(k in s.heading.lower() for k in keywords):
            keep.append(s)
            inside = s.level
    return [s for s in keep if s.text]


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class MediaWiki:
    """GET requests to one MediaWiki `api.php`, shared safely by threads."""

    def __init__(self, api_url: str = DEFAULT_API, *, user_agent: str, max_rps: float = 5.0, max_retries: int = 5,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, timeout_s: float = 30.0, maxlag: int | None = 5, seed: int = 0):  # fmt: skip
        if not re.search(r"[^\s]+/[^\s]+.*(@|https?://|\()", user_agent):
            raise BiobenchError(
                f"User-Agent {user_agent!r} does not identify you: Wikimedia requires a descriptive one with a contact, "
                "e.g. 'my-captions/0.1 (https://example.org/me; me@example.org)'. Pass it with --user-agent."
            )
        self.api_url, self.user_agent = api_url, user_agent
        self.max_retries, self.backoff_s, self.max_backoff_s, self.timeout_s, self.maxlag = max_retries, backoff_s, max_backoff_s, timeout_s, maxlag  # fmt: skip
        self.interval = 1.0 / max_rps
        self._next = 0.0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.requests = 0
        self.retries = 0

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            self.requests += 1
        if start > now:
            time.sleep(start - now)

    def get(self, params: dict) -> dict:
        """The JSON answer to one API request, with the retries described above."""
        params = {"format": "json", "formatversion": "2", **params}
        if self.maxlag is not None:
            params.setdefault("maxlag", str(self.maxlag))
        url = f"{self.api_url}?{urllib.parse.urlencode(params)}"
        attempt = 0
        while True:
            attempt += 1
            self._wait_turn()
            try:
                return self._once(url)
            except _Retryable as retry:
                if attempt > self.max_retries:
                    raise WikiRequestError(f"{self.api_url}: gave up after {attempt} attempts ({retry.reason}); URL: {url}") from None
                backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + 0.5 * self._rng.random())
                delay = max(min(retry.retry_after, MAX_RETRY_AFTER_S), backoff) if retry.retry_after is not None else backoff
                with self._lock:
                    self.retries += 1
                logger.info("%s; retry %d/%d in %.2fs.", retry.reason, attempt, self.max_retries, delay)
                time.sleep(delay)

    def _once(self, url: str) -> dict:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
                headers = response.headers
        except urllib.error.HTTPError as err:
            if err.code == 429 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code}", _retry_after(err.headers.get("Retry-After"))) from None
            raise WikiRequestError(f"{self.api_url}: HTTP {err.code} {err.reason} for {url}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise _Retryable(f"cannot reach {self.api_url}: {reason}") from None
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise _Retryable("malformed JSON") from None
        error = data.get("error") if isinstance(data, dict) else None
        if error:
            if error.get("code") == "maxlag":
                raise _Retryable("maxlag", _retry_after(headers.get("Retry-After")) or 5.0)
            raise WikiRequestError(f"{self.api_url}: API error {error.get('code')}: {error.get('info')} (for {url})")
        return data

    # Queries

    def page(self, title: str) -> Page:
        """A page's plain text by title, following redirects; missing and disambiguation pages flagged."""
        data = self.get({"action": "query", "titles": title, "redirects": "1", "prop": "extracts|pageprops|info",
                         "explaintext": "1", "exsectionformat": "wiki", "ppprop": "disambiguation"})  # fmt: skip
        query = data.get("query", {})
        pages = query.get("pages") or []
        if not pages:
            raise WikiRequestError(f"{self.api_url}: no page in the answer for {title!r}")
        p = pages[0]
        redirects = query.get("redirects") or []
        redirected_from = redirects[0].get("from") if redirects else None
        if p.get("missing") or p.get("invalid"):
            return Page(title, title=p.get("title", title), missing=True, redirected_from=redirected_from)
        return Page(title, title=p.get("title"), pageid=p.get("pageid"), revid=p.get("lastrevid"), redirected_from=redirected_from,
                    disambiguation="disambiguation" in (p.get("pageprops") or {}), extract=p.get("extract") or "")  # fmt: skip

    def links(self, title: str, limit: int = 50) -> list[str]:
        """Article titles a page links to (a disambiguation page's candidates)."""
        data = self.get({"action": "query", "titles": title, "prop": "links", "plnamespace": "0", "pllimit": str(limit)})
        pages = data.get("query", {}).get("pages") or [{}]
        return [link["title"] for link in pages[0].get("links", [])]

    def search(self, text: str, limit: int = 5) -> list[str]:
        """Titles of the best full-text search hits (a missing page's candidates)."""
        data = self.get({"action": "query", "list": "search", "srsearch": text, "srlimit": str(limit), "srprop": ""})
        return [hit["title"] for hit in data.get("query", {}).get("search", [])]
