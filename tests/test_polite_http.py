"""The polite HTTP client against a real local server: retries, backoff, 429, timeouts, limits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_registry import FakeRegistry, Reply

from ctcurate.doi.polite_http import (
    BudgetSpent,
    HttpPolicy,
    PoliteClient,
    ServiceGate,
    Unreachable,
    parse_interval,
    parse_retry_after,
)

DOI = "10.1136/bmj.m606"


class RecordingSleep:
    """time.sleep that remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.waits.append(seconds)
        time.sleep(seconds)


@pytest.fixture()
def registry():
    with FakeRegistry() as reg:
        yield reg


def client(**policy: object) -> tuple[PoliteClient, RecordingSleep]:
    sleep = RecordingSleep()
    values: dict[str, object] = {"timeout": 2.0, "max_retries": 3, "backoff_base": 0.01} | policy
    return PoliteClient(HttpPolicy(**values), sleep=sleep), sleep  # type: ignore[arg-type]


def handle_url(reg: FakeRegistry, doi: str = DOI) -> str:
    return f"{reg.base}/doi/api/handles/{doi}"


def test_parse_interval():
    assert parse_interval("1s") == 1.0
    assert parse_interval("1000ms") == 1.0
    assert parse_interval("2") == 2.0
    assert parse_interval("1m") == 60.0
    assert parse_interval("soon") is None
    assert parse_interval(None) is None


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("0.1") == pytest.approx(0.1)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("-5") == 0.0
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=lambda: now) == pytest.approx(30.0)
    assert parse_retry_after("whenever") is None
    assert parse_retry_after(None) is None


def test_503_then_success_retries_with_exponential_backoff(registry):
    registry.script("handle", DOI, Reply(503), Reply(503))
    http, sleep = client(backoff_base=0.02)
    answer = http.get("doi", handle_url(registry))
    assert answer.status == 200
    assert registry.count("handle", DOI) == 3
    assert http.stats.retries == 2
    first, second = sleep.waits
    assert 0.02 <= first <= 0.02 * 1.25
    assert 0.04 <= second <= 0.04 * 1.25  # doubled


def test_persistent_5xx_gives_up_with_reason(registry):
    registry.script("handle", DOI, *[Reply(502)] * 10)
    http, _ = client(max_retries=2)
    with pytest.raises(Unreachable) as info:
        http.get("doi", handle_url(registry))
    assert info.value.reason == "HTTP 502, after 3 tries"
    assert registry.count("handle", DOI) == 3


def test_404_is_an_answer_not_a_failure(registry):
    registry.not_found.add("10.1136/bmj.m9999")
    http, sleep = client()
    answer = http.get("doi", handle_url(registry, "10.1136/bmj.m9999"))
    assert answer.status == 404
    assert registry.count() == 1
    assert sleep.waits == []


def test_429_waits_for_retry_after(registry):
    registry.script("handle", DOI, Reply(429, headers={"Retry-After": "0.15"}))
    http, _ = client()
    started = time.monotonic()
    assert http.get("doi", handle_url(registry)).status == 200
    times = [t for t, kind, _ in registry.log]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.14
    assert time.monotonic() - started < 2
    assert http.stats.waits == [pytest.approx(0.15)]


def test_429_without_retry_after_backs_off(registry):
    registry.script("handle", DOI, Reply(429))
    http, sleep = client(backoff_base=0.02)
    assert http.get("doi", handle_url(registry)).status == 200
    assert len(sleep.waits) == 1 and 0.02 <= sleep.waits[0] <= 0.025


def test_429_pauses_the_whole_service(registry):
    """Another thread's request to the same service also waits out the Retry-After."""
    registry.script("handle", DOI, Reply(429, headers={"Retry-After": "0.3"}))
    http, _ = client()
    first = threading.Thread(target=http.get, args=("doi", handle_url(registry)))
    first.start()
    while registry.count() == 0:
        time.sleep(0.005)
    time.sleep(0.05)  # the 429 has been answered and seen
    started = time.monotonic()
    http.get("doi", handle_url(registry, "10.1016/j.ijid.2020.02.043"))
    first.join()
    assert time.monotonic() - started >= 0.2


def test_retry_after_too_long_gives_up_without_waiting(registry):
    registry.script("handle", DOI, Reply(429, headers={"Retry-After": "3600"}))
    http, sleep = client(retry_after_max=60)
    with pytest.raises(Unreachable, match="asked to wait 3600 s"):
        http.get("doi", handle_url(registry))
    assert sleep.waits == []


def test_slow_answer_times_out_then_retry_succeeds(registry):
    registry.script("handle", DOI, Reply(delay=1.0))
    http, _ = client(timeout=0.2)
    assert http.get("doi", handle_url(registry)).status == 200
    assert registry.count("handle", DOI) == 2


def test_always_slow_is_unreachable_with_timeout_reason(registry):
    registry.script("handle", DOI, *[Reply(delay=0.6)] * 3)
    http, _ = client(timeout=0.15, max_retries=1)
    with pytest.raises(Unreachable) as info:
        http.get("doi", handle_url(registry))
    assert info.value.reason == "no answer within 0.15 s, after 2 tries"


def test_connection_refused_is_unreachable_after_backoff():
    http, sleep = client(max_retries=2)
    with pytest.raises(Unreachable) as info:
        http.get("doi", "http://127.0.0.1:9/api/handles/10.1/x")
    assert info.value.reason == "connection failed (ConnectionError), after 3 tries"
    assert len(sleep.waits) == 2 and sleep.waits[1] > sleep.waits[0]


def test_a_service_that_keeps_failing_is_not_asked_again():
    http, _ = client(max_retries=0, give_up_after=2)
    for _ in range(2):
        with pytest.raises(Unreachable, match="connection failed"):
            http.get("doi", "http://127.0.0.1:9/x")
    with pytest.raises(Unreachable, match="not asked: the last 2 requests to this service failed"):
        http.get("doi", "http://127.0.0.1:9/x")
    assert http.stats.requests == 2


def test_concurrency_is_capped_per_service():
    with FakeRegistry(delay=0.05) as reg:
        http, _ = client(max_concurrent={"doi": 3, "crossref": 2})
        urls = [("doi", handle_url(reg, f"10.1/{i}")) for i in range(12)]
        urls += [("crossref", f"{reg.base}/crossref/works/10.1/{i}") for i in range(12)]
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda su: http.get(*su).status, urls))
        assert statuses == [200] * 24
        assert reg.max_in_flight["doi"] == 3
        assert reg.max_in_flight["crossref"] == 2


def test_rate_limit_headers_space_the_requests():
    with FakeRegistry(headers={"x-rate-limit-limit": "20", "x-rate-limit-interval": "1s"}) as reg:
        http, _ = client()
        http.get("doi", handle_url(reg))  # learns 20 per second
        assert http.gate("doi").spacing == pytest.approx(0.05)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: http.get("doi", handle_url(reg, f"10.1/{i}")), range(8)))
        times = sorted(t for t, _, _ in reg.log[1:])
        assert times[-1] - times[0] >= 7 * 0.05 * 0.9


def test_gate_ignores_unreadable_rate_headers():
    gate = ServiceGate(2, time.monotonic, time.sleep)
    gate.observe({"x-rate-limit-limit": "lots", "x-rate-limit-interval": "1s"})
    gate.observe({"x-rate-limit-limit": "50", "x-rate-limit-interval": "sometimes"})
    assert gate.spacing == 0.0


def test_user_agent_is_sent(registry):
    http, _ = client(user_agent="ctcurate/9 (test; mailto:curator@example.org)")
    http.get("doi", handle_url(registry))
    assert registry.user_agents == {"ctcurate/9 (test; mailto:curator@example.org)"}


def test_a_dripping_body_ends_at_the_one_deadline(registry):
    """requests' timeout is per read: a byte every 50 ms never trips 0.3 s; the deadline does."""
    registry.script("handle", DOI, *[Reply(drip=0.05)] * 2)
    http, _ = client(timeout=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        http.get("doi", handle_url(registry))
    assert info.value.reason == "the answer was still arriving after 0.3 s"
    assert time.monotonic() - started < 1.5  # one deadline: a dripping server is not asked again
    assert registry.count() == 1


def test_pacing_longer_than_the_cap_is_rate_limited_not_waited(registry):
    http, sleep = client(retry_after_max=60)
    gate = http.gate("doi")
    gate.observe({"x-rate-limit-limit": "1", "x-rate-limit-interval": "1h"})
    http.get("doi", handle_url(registry))
    with pytest.raises(Unreachable, match=r"rate-limited: the service's pacing asks for a wait of 3600 s"):
        http.get("doi", handle_url(registry))
    assert sleep.waits == [] and registry.count() == 1


def test_gzip_answer_is_decoded_on_the_deadline_path():
    import gzip
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = gzip.compress(json.dumps({"title": "\u00e9" * 5000}).encode())

    class Gzip(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http, _ = client()
        answer = http.get("doi", f"http://127.0.0.1:{server.server_address[1]}/x")
        assert json.loads(answer.text) == {"title": "\u00e9" * 5000}
    finally:
        server.shutdown()
        server.server_close()


def test_concurrency_follows_the_services_headers():
    gate = ServiceGate(3, time.monotonic, time.sleep, ceiling=5)
    gate.observe({"x-api-pool": "public"})
    assert (gate.pool, gate.concurrency) == ("public", 1)
    gate.observe({"x-api-pool": "polite", "x-concurrency-limit": "2"})
    assert (gate.pool, gate.concurrency) == ("polite", 2)
    gate.observe({"x-concurrency-limit": "50"})
    assert gate.concurrency == 5  # never above the ceiling


class FakeClock:
    """A monotonic clock that only the client's own waits move (and the test, by hand)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_request_deadline_bounds_its_retries(registry):
    """Backoff 1, 2, 4 s (+ jitter) fits in 10 s; the next (8 s) would not: no fifth try."""
    registry.script("handle", DOI, *[Reply(503)] * 10)
    clock = FakeClock()
    policy = HttpPolicy(timeout=2.0, max_retries=10, backoff_base=1.0, request_deadline=10.0)
    http = PoliteClient(policy, sleep=clock.sleep, clock=clock)
    with pytest.raises(Unreachable) as info:
        http.get("doi", handle_url(registry))
    assert info.value.reason == "HTTP 503, after 4 tries; the wait for another: the request's 10 s deadline would have passed"
    assert not isinstance(info.value, BudgetSpent)
    assert registry.count() == 4


def test_the_run_budget_counts_from_the_first_request_and_then_ends_every_request(registry):
    clock = FakeClock()
    http = PoliteClient(HttpPolicy(timeout=2.0, run_budget=5.0), sleep=clock.sleep, clock=clock)
    clock.now += 100  # time before the first request (reading a sheet, hashing) is not counted
    assert http.get("doi", handle_url(registry)).status == 200
    clock.now += 6
    with pytest.raises(BudgetSpent) as info:
        http.get("crossref", f"{registry.base}/crossref/works/{DOI}")
    assert info.value.reason == "not asked: the run's 5 s budget is spent"
    assert registry.count() == 1
    assert http.gate("crossref").failures_in_row == 0  # not the service's fault


def test_the_run_budget_cuts_a_dripping_answer_short(registry):
    registry.script("handle", DOI, Reply(drip=0.05))
    http, _ = client(timeout=30.0, run_budget=0.3)
    started = time.monotonic()
    with pytest.raises(BudgetSpent) as info:
        http.get("doi", handle_url(registry))
    assert time.monotonic() - started < 5  # a guard against a hang, not a timing target
    assert info.value.reason == "the answer was still arriving: the run's 0.3 s budget is spent"


def test_waiting_for_a_connection_ends_at_the_request_deadline(registry):
    http, _ = client(max_concurrent={"doi": 1}, request_deadline=0.2)
    assert http.gate("doi").slots.acquire(1.0)  # another request holds the only connection
    with pytest.raises(Unreachable) as info:
        http.get("doi", handle_url(registry))
    assert info.value.reason == "no free connection to the service: the request's 0.2 s deadline has passed"
    assert registry.count() == 0


def test_a_request_queued_behind_a_failing_one_is_not_sent(registry):
    """Given up while it waited for its connection: it does not cost the service another deadline."""
    http, _ = client(max_concurrent={"doi": 1}, give_up_after=3)
    gate = http.gate("doi")
    assert gate.slots.acquire(1.0)
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(http.get, "doi", handle_url(registry))
        time.sleep(0.1)
        gate.failures_in_row = 3  # what the request holding the connection leaves behind when it fails
        gate.slots.release()
        with pytest.raises(Unreachable, match="not asked: the last 3 requests to this service failed"):
            queued.result(timeout=10)
    assert registry.count() == 0
