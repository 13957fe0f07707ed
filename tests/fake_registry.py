"""A local stand-in for doi.org, Crossref and the bioRxiv/medRxiv API (tests and bench only).

A real threaded HTTP server on 127.0.0.1 (random port). It serves the recorded bodies in
tests/data/registry/, answers generically for any other DOI, and can be scripted per request
(503, 429 with Retry-After, slow answers, malformed JSON). It counts what it is asked, when, by
whom, and how many requests were in flight at once per service.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

RECORDED = Path(__file__).resolve().parent / "data" / "registry"
SERVICES = ("doi", "crossref", "biorxiv")


@dataclass
class Reply:
    """One scripted answer: status, body (None = the normal body), extra headers, delay first."""

    status: int = 200
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


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


def _wrong_server(doi: str, server: str | None) -> bool:
    """A dated 10.1101 DOI with 8 digits is medRxiv's, with 6 bioRxiv's; the other server has no post."""
    if server is None or not doi.startswith("10.1101/"):
        return False
    digits = len(doi.rsplit(".", 1)[-1])
    return (server == "biorxiv" and digits == 8) or (server == "medrxiv" and digits == 6)


class FakeRegistry:
    """Start with `with FakeRegistry() as reg:`; point the resolver at `reg.urls`."""

    def __init__(self, delay: float = 0.0, headers: dict[str, str] | None = None) -> None:
        self.delay = delay  # every answer waits this long (simulated latency)
        self.headers = dict(headers or {})  # sent with every answer (e.g. x-rate-limit-*)
        self.not_found: set[str] = set()  # generic "not registered" DOIs
        self.scripts: dict[tuple[str, str], list[Reply]] = defaultdict(list)
        self.lock = threading.Lock()
        self.hits: Counter[tuple[str, str]] = Counter()  # (kind, doi) -> requests
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

    def __enter__(self) -> FakeRegistry:
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
        if recorded.is_file():
            text = recorded.read_text(encoding="utf-8")
            status = 404 if kind == "handle" and json.loads(text).get("responseCode") == 100 else 200
        elif doi in self.not_found or _wrong_server(doi, server):
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
        return status, text, headers, delay

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
                with registry.lock:
                    registry.hits[(kind, doi)] += 1
                    registry.log.append((time.monotonic(), kind, doi))
                    registry.user_agents.add(self.headers.get("User-Agent", ""))
                    registry.in_flight[service] += 1
                    registry.max_in_flight[service] = max(registry.max_in_flight[service], registry.in_flight[service])
                try:
                    status, text, headers, delay = registry._answer(kind, doi, server)
                    if delay:
                        time.sleep(delay)
                finally:
                    # Counted out before answering: once the client has the answer it may send the
                    # next request, which must not find this one still counted.
                    with registry.lock:
                        registry.in_flight[service] -= 1
                try:
                    self._send(status, text, {**registry.headers, **headers})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _send(self, status: int, text: str, headers: dict[str, str]) -> None:
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if text[:1] in "{[" else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
