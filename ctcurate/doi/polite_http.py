"""Polite HTTP for public registries: per-service concurrency, pacing, retries and timeouts.

Owns how ctcurate talks to the network; `requests` is imported only here. A request that gets no
usable answer raises `Unreachable` (callers turn it into a finding); every other answer, 404
included, is returned for the caller to judge. Imports nothing else from ctcurate.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter


class Unreachable(Exception):
    """No usable answer after every retry (connection error, timeout, 5xx, 429 for too long)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class HttpPolicy:
    """How hard and how politely to try. Defaults suit the public registries."""

    user_agent: str = "ctcurate"
    timeout: float = 15.0  # seconds: the whole request (connect, headers and body), not each read
    max_retries: int = 4  # further tries after the first, for 5xx, 429 and connection errors
    backoff_base: float = 0.5  # first wait in seconds; doubles with each retry
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a longer Retry-After or pacing wait than this gives up instead of stalling
    max_concurrent: Mapping[str, int] = field(default_factory=dict)  # per service, until it says otherwise
    default_concurrent: int = 5
    concurrent_ceiling: int = 5  # the most a service's own `x-concurrency-limit` can raise it to
    give_up_after: int = 3  # requests to one service that failed in a row before the rest fail fast


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    headers: Mapping[str, str]


@dataclass
class ClientStats:
    """Counters for reports and benchmarks (requests sent, including retries)."""

    requests: int = 0
    retries: int = 0
    waits: list[float] = field(default_factory=list)


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str | None) -> float | None:
    """`1s` / `1000ms` / `60` (seconds) -> seconds; None when unreadable."""
    m = _INTERVAL.match(text or "")
    if not m:
        return None
    return float(m[1]) * _UNIT[(m[2] or "s").lower()]


def parse_retry_after(text: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class RateLimited(Exception):
    """The service's pacing asks for a longer wait than the policy allows."""


class _Slots:
    """A concurrency cap the service's answers may change while requests are in flight."""

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self.limit = max(1, limit)
        self.in_use = 0

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()

    def __enter__(self) -> None:
        with self._cond:
            while self.in_use >= self.limit:
                self._cond.wait()
            self.in_use += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self.in_use -= 1
            self._cond.notify_all()


# Crossref's pools (`x-api-pool`) and their concurrency when no `x-concurrency-limit` says it.
POOL_CONCURRENCY = {"public": 1, "polite": 3}


class ServiceGate:
    """Concurrency cap and request pacing for one service (one host in production).

    Both follow the service's own headers: `x-concurrency-limit` (else `x-api-pool`) sizes the
    cap, `x-rate-limit-limit` / `x-rate-limit-interval` space the requests; a 429 pauses every
    thread of the service until its Retry-After has passed.
    """

    def __init__(
        self,
        max_concurrent: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        ceiling: int = 5,
    ) -> None:
        self.slots = _Slots(max_concurrent)
        self.ceiling = max(1, ceiling)
        self.pool: str | None = None  # Crossref's x-api-pool, as last seen
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._last_start = -math.inf
        self.spacing = 0.0  # seconds between request starts
        self.failures_in_row = 0  # requests that ended Unreachable since the last answer

    @property
    def concurrency(self) -> int:
        return self.slots.limit

    def wait_turn(self, max_wait: float = math.inf) -> float:
        """Block until this thread may start a request; returns the time waited.

        Raises `RateLimited` (and keeps no turn) when that wait would be longer than `max_wait`.
        """
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if start - now > max_wait:
                raise RateLimited(f"the service's pacing asks for a wait of {start - now:.0f} s")
            self._last_start = start
            self._next = start + self.spacing
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def observe(self, headers: Mapping[str, str]) -> None:
        self._observe_concurrency(headers)
        limit, interval = headers.get("x-rate-limit-limit"), parse_interval(headers.get("x-rate-limit-interval"))
        try:
            count = float(limit) if limit is not None else 0.0
        except ValueError:
            return
        if count > 0 and interval is not None:
            with self._lock:
                self.spacing = interval / count
                # the request just answered already counts: the next one waits its spacing from it
                self._next = max(self._next, self._last_start + self.spacing)

    def _observe_concurrency(self, headers: Mapping[str, str]) -> None:
        pool = (headers.get("x-api-pool") or "").strip().lower() or None
        if pool:
            self.pool = pool
        try:
            limit: int | None = int(headers.get("x-concurrency-limit", "").strip())
        except ValueError:
            limit = POOL_CONCURRENCY.get(pool or "")
        if limit is not None and limit > 0:
            self.slots.set_limit(min(limit, self.ceiling))

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


class _Deadline(Exception):
    """The answer did not arrive completely before the request's deadline."""


def _read_body(raw: Any, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Deadline
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(left)
        try:
            chunk = raw.read1(65536, decode_content=True)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            if time.monotonic() >= deadline or isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
                raise _Deadline from None
            raise requests.ConnectionError(str(exc)) from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class PoliteClient:
    """GET with retries, backoff, timeouts, per-service concurrency and rate limits; thread-safe."""

    def __init__(
        self,
        policy: HttpPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.stats = ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._gates: dict[str, ServiceGate] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def gate(self, service: str) -> ServiceGate:
        with self._lock:
            if service not in self._gates:
                cap = self.policy.max_concurrent.get(service, self.policy.default_concurrent)
                self._gates[service] = ServiceGate(cap, self._clock, self._sleep, self.policy.concurrent_ceiling)
            return self._gates[service]

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"User-Agent": self.policy.user_agent, "Accept": "application/json"})
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with up to 25 % jitter, so that threads do not retry in step."""
        base = min(self.policy.backoff_max, self.policy.backoff_base * 2.0**attempt)
        return base * (1 + 0.25 * self._rng.random())

    def get(self, service: str, url: str) -> Answer:
        """One answer for `url`; raises `Unreachable` when none is usable after the retries."""
        gate = self.gate(service)
        policy = self.policy
        if policy.give_up_after and gate.failures_in_row >= policy.give_up_after:
            raise Unreachable(url, f"not asked: the last {gate.failures_in_row} requests to this service failed")
        try:
            answer = self._get(gate, url)
        except Unreachable:
            with self._lock:
                gate.failures_in_row += 1
            raise
        with self._lock:
            gate.failures_in_row = 0
        return answer

    def _get(self, gate: ServiceGate, url: str) -> Answer:
        policy = self.policy
        attempt = 0
        while True:
            try:
                gate.wait_turn(policy.retry_after_max)
            except RateLimited as exc:
                raise Unreachable(url, f"rate-limited: {exc} (more than {policy.retry_after_max:g} s)") from None
            retry_after: float | None = None
            with gate.slots:
                with self._lock:
                    self.stats.requests += 1
                try:
                    status, text, headers = self._fetch(url)
                except _Deadline:
                    # a server that answers but dribbles its body will not be faster on a retry: give
                    # up on it for the rest of the run, so a dripping service costs one deadline
                    with self._lock:
                        gate.failures_in_row = max(gate.failures_in_row, policy.give_up_after - 1)
                    raise Unreachable(url, f"the answer was still arriving after {policy.timeout:g} s") from None
                except requests.Timeout:
                    reason = f"no answer within {policy.timeout:g} s"
                except requests.RequestException as exc:
                    reason = f"connection failed ({type(exc).__name__})"
                else:
                    gate.observe(headers)
                    if status == 429:
                        retry_after = parse_retry_after(headers.get("retry-after"))
                        reason = "HTTP 429 Too Many Requests"
                    elif status >= 500:
                        reason = f"HTTP {status}"
                    else:
                        return Answer(status, text, headers)
            tripped = policy.give_up_after and gate.failures_in_row >= policy.give_up_after
            if attempt >= policy.max_retries or tripped:
                tries = attempt + 1
                raise Unreachable(url, f"{reason}, after {tries} tr{'y' if tries == 1 else 'ies'}")
            if retry_after is not None:
                if retry_after > policy.retry_after_max:
                    raise Unreachable(url, f"{reason}: asked to wait {retry_after:g} s")
                wait = retry_after
                gate.pause(wait)  # the whole service waits, not only this thread
            else:
                wait = self.backoff(attempt)
                self._sleep(wait)
            with self._lock:
                self.stats.retries += 1
                self.stats.waits.append(wait)
            attempt += 1

    def _fetch(self, url: str) -> tuple[int, str, dict[str, str]]:
        """One GET whose whole answer must arrive within the policy's timeout.

        requests' own timeout is per socket read, so a body dripped a byte at a time never ends;
        here the body is read piecewise against one deadline, each read bounded by the time left.
        """
        deadline = time.monotonic() + self.policy.timeout
        with self._session().get(url, timeout=self.policy.timeout, allow_redirects=True, stream=True) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            body = _read_body(resp.raw, deadline)
            return resp.status_code, body.decode(resp.encoding or "utf-8", errors="replace"), headers

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
