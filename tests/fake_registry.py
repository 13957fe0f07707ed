"""A local stand-in for doi.org, Crossref and the bioRxiv/medRxiv API (tests and bench only).

A real threaded HTTP server on 127.0.0.1 (random port). It serves the recorded bodies in
tests/data/registry/, answers generically for any other DOI, and can be scripted per request
(503, 429 with Retry-After, slow or dripped answers, malformed JSON, bioRxiv error envelopes).
It counts what it is asked, when, by whom, and how many requests were in flight at once per
service. Like the real services: a dated bioRxiv/medRxiv ID exists under the prefix it was minted
with (10.1101 before 2025-12-01, 10.64898 since, `minted_new` for late-posted older IDs);
Crossref answers carry its pool and limit headers (`crossref_limits`), and a service answers
429 when more requests than its `concurrency_cap` arrive at once; `/pubs/<server>/<journal DOI>`
finds a preprint by its journal DOI.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote

RECORDED = Path(__file__).resolve().parent / "data" / "registry"
SERVICES = ("doi", "crossref", "biorxiv")


@dataclass
class Reply:
    """One scripted answer: status, body (None = the normal body), extra headers, delay first."""

    status: int = 200
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0  # seconds between the body's bytes (a trickling answer)


def _file_key(kind: str, doi: str, server: str | None = None) -> str:
    middle = f"{server}__" if server else ""
    return f"{kind}__{middle}{doi.replace('/', '_')}.json"


def _generic(kind: str, doi: str, server: str | None) -> tuple[int, dict[str, object]]:
    """A plausible answer for a DOI with no recorded body."""
    if kind == "handle":
        return 200, {
            "responseCode": 1,
            "handle": doi,
            "values": [
                {"index": 1, "type": "URL", "data": {"format": "string", "value": f"https://example.org/{doi}"}}
            ],
        }
    preprint = doi.startswith(("10.1101/", "10.64898/"))
    if kind == "works":
        message: dict[str, object] = {
            "DOI": doi,
            "title": [f"Generic paper {doi}"],
            "type": "posted-content" if preprint else "journal-article",
            "container-title": [] if preprint else ["Journal of Generic Results"],
            "issued": {"date-parts": [[2020, 3, 1]]},
            "relation": {},
        }
        if preprint:
            digits = doi.rsplit(".", 1)[-1]
            message["institution"] = [{"name": "medRxiv" if len(digits) == 8 else "bioRxiv"}]
        return 200, {"status": "ok", "message-type": "work", "message-version": "1.0.0", "message": message}
    if kind == "details":
        return 200, {
            "messages": [{"status": "ok"}],
            "collection": [
                {
                    "doi": doi,
                    "title": f"Generic paper {doi}",
                    "date": "2020-03-01",
                    "version": "1",
                    "published": "NA",
                    "server": server,
                }
            ],
        }
    return 200, {"messages": [{"status": "no posts found"}], "collection": []}


# The bioRxiv API's error envelope: HTTP 200, an error in messages[0].status, no collection.
ERROR_ENVELOPE = json.dumps({"messages": [{"status": "Error: the service is temporarily unavailable"}]})
CHANGEOVER = date(2025, 12, 1)


def _minted_prefix(ident: str, minted_new: set[str]) -> str | None:
    """The prefix a dated preprint ID was minted under; None when `ident` is not dated."""
    parts = ident.split(".")
    try:
        posted = date(int(parts[0]), int(parts[1]), int(parts[2]))
    except (ValueError, IndexError):
        return None
    return "10.64898" if posted >= CHANGEOVER or ident in minted_new else "10.1101"


def _reverse_pubs(server: str | None, doi: str) -> str | None:
    """A recorded /pubs body whose journal DOI is `doi` (bioRxiv's lookup by published DOI)."""
    for path in sorted(RECORDED.glob(f"pubs__{server}__*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        if any(str(e.get("published_doi", "")).lower() == doi for e in body.get("collection", [])):
            return json.dumps(body)
    return None


def _wrong_server(doi: str, server: str | None) -> bool:
    """A dated 10.1101 DOI with 8 digits is medRxiv's, with 6 bioRxiv's; the other server has no post."""
    if server is None or not doi.startswith("10.1101/"):
        return False
    digits = len(doi.rsplit(".", 1)[-1])
    return (server == "biorxiv" and digits == 8) or (server == "medrxiv" and digits == 6)


class FakeRegistry:
    """Start with `with FakeRegistry() as reg:`; point the resolver at `reg.urls`."""

    def __init__(
        self,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
        crossref_limits: bool = False,
        concurrency_cap: dict[str, int] | None = None,
    ) -> None:
        self.delay = delay  # every answer waits this long (simulated latency)
        self.headers = dict(headers or {})  # sent with every answer (e.g. x-rate-limit-*)
        self.crossref_limits = crossref_limits  # x-api-pool / x-concurrency-limit / x-rate-limit-* on Crossref
        self.concurrency_cap = dict(concurrency_cap or {})  # service -> in flight beyond which it says 429
        self.rejected: Counter[str] = Counter()  # 429s sent for exceeding `concurrency_cap`
        self.queries: list[dict[str, list[str]]] = []  # each request's query parameters
        self.not_found: set[str] = set()  # generic "not registered" DOIs
        self.minted_new: set[str] = set()  # preprint IDs dated before 2025-12-01 but minted as 10.64898
        self.scripts: dict[tuple[str, str], list[Reply]] = defaultdict(list)
        self._drips: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.hits: Counter[tuple[str, str]] = Counter()  # (kind, doi) -> requests
        self.server_hits: Counter[tuple[str, str | None, str]] = Counter()  # (kind, server, doi) -> requests
        self.log: list[tuple[float, str, str]] = []  # (time, kind, doi)
        self.user_agents: set[str] = set()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def urls(self) -> dict[str, str]:
        return {
            "CTCURATE_DOI_URL": f"{self.base}/doi",
            "CTCURATE_CROSSREF_URL": f"{self.base}/crossref",
            "CTCURATE_BIORXIV_URL": f"{self.base}/biorxiv",
        }

    def script(self, kind: str, doi: str, *replies: Reply) -> None:
        """Answer the next requests for (kind, doi) with `replies`, in order, then normally."""
        self.scripts[(kind, doi)].extend(replies)

    def count(self, kind: str | None = None, doi: str | None = None) -> int:
        with self.lock:
            return sum(
                n for (k, d), n in self.hits.items() if (kind is None or k == kind) and (doi is None or d == doi)
            )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _route(self, path: str) -> tuple[str, str, str | None, str] | None:
        """(kind, doi, server, service) for /doi/api/handles/<doi>, /crossref/works/<doi>,
        /biorxiv/{details,pubs}/<server>/<doi>."""
        parts = unquote(path.split("?", 1)[0]).lstrip("/").split("/")
        if parts[:3] == ["doi", "api", "handles"] and len(parts) > 3:
            return "handle", "/".join(parts[3:]).lower(), None, "doi"
        if parts[:2] == ["crossref", "works"] and len(parts) > 2:
            return "works", "/".join(parts[2:]).lower(), None, "crossref"
        if parts[0] == "biorxiv" and len(parts) > 3 and parts[1] in ("details", "pubs"):
            return parts[1], "/".join(parts[3:]).lower(), parts[2], "biorxiv"
        return None

    def _answer(self, kind: str, doi: str, server: str | None) -> tuple[int, str, dict[str, str], float]:
        with self.lock:
            queue = self.scripts.get((kind, doi))
            scripted = queue.pop(0) if queue else None
        recorded = RECORDED / _file_key("crossref" if kind == "works" else kind, doi, server)
        reverse = _reverse_pubs(server, doi) if kind == "pubs" and not recorded.is_file() else None
        if recorded.is_file():
            text = recorded.read_text(encoding="utf-8")
            status = 404 if kind == "handle" and json.loads(text).get("responseCode") == 100 else 200
        elif reverse is not None:
            status, text = 200, reverse
        elif doi in self.not_found or _wrong_server(doi, server) or self._wrong_prefix(doi):
            status, text = self._not_found(kind, doi)
        else:
            status, payload = _generic(kind, doi, server)
            text = json.dumps(payload)
        headers: dict[str, str] = {}
        delay = self.delay
        if scripted:
            status = scripted.status
            text = scripted.body if scripted.body is not None else text
            headers = scripted.headers
            delay += scripted.delay
            if scripted.drip:
                with self.lock:
                    self._drips[(kind, doi)] = scripted.drip
        return status, text, headers, delay

    def _drip(self, kind: str, doi: str) -> float:
        with self.lock:
            return self._drips.pop((kind, doi), 0.0)

    def _wrong_prefix(self, doi: str) -> bool:
        prefix, _, ident = doi.partition("/")
        if prefix not in ("10.1101", "10.64898"):
            return False
        minted = _minted_prefix(ident.split("v")[0], self.minted_new)
        return minted is not None and minted != prefix

    def _limit_headers(self, service: str, query: dict[str, list[str]], agent: str) -> dict[str, str]:
        """Crossref's pool headers: the polite pool for a request that gives a mailto."""
        if service != "crossref" or not self.crossref_limits:
            return {}
        polite = "mailto" in query or "mailto:" in agent
        return {
            "x-api-pool": "polite" if polite else "public",
            "x-concurrency-limit": "3" if polite else "1",
            "x-rate-limit-limit": "10" if polite else "5",
            "x-rate-limit-interval": "1s",
        }

    @staticmethod
    def _not_found(kind: str, doi: str) -> tuple[int, str]:
        if kind == "handle":
            return 404, json.dumps({"responseCode": 100, "handle": doi})
        if kind == "works":
            return 404, "Resource not found."
        return 200, json.dumps({"messages": [{"status": "no posts found"}], "collection": []})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                route = registry._route(self.path)
                if route is None:
                    self._send(404, "no such endpoint", {})
                    return
                kind, doi, server, service = route
                query = parse_qs(self.path.partition("?")[2])
                agent = self.headers.get("User-Agent", "")
                with registry.lock:
                    registry.hits[(kind, doi)] += 1
                    registry.server_hits[(kind, server, doi)] += 1
                    registry.log.append((time.monotonic(), kind, doi))
                    registry.user_agents.add(agent)
                    registry.queries.append(query)
                    registry.in_flight[service] += 1
                    registry.max_in_flight[service] = max(registry.max_in_flight[service], registry.in_flight[service])
                    over = registry.in_flight[service] > registry.concurrency_cap.get(service, 10**9)
                    if over:
                        registry.rejected[service] += 1
                try:
                    status, text, headers, delay = registry._answer(kind, doi, server)
                    headers = {**registry._limit_headers(service, query, agent), **headers}
                    if over:
                        status, text = 429, "Too many concurrent requests"
                        headers = {**headers, "Retry-After": "0.05"}
                    if delay:
                        time.sleep(delay)
                finally:
                    # Counted out before answering: once the client has the answer it may send the
                    # next request, which must not find this one still counted.
                    with registry.lock:
                        registry.in_flight[service] -= 1
                drip = registry._drip(kind, doi)
                try:
                    self._send(status, text, {**registry.headers, **headers}, drip)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _send(self, status: int, text: str, headers: dict[str, str], drip: float = 0.0) -> None:
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if text[:1] in "{[" else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if not drip:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(drip)

        return Handler
