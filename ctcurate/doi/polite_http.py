"""Polite HTTP for public registries: per-service concurrency, pacing, retries and timeouts.

Owns how ctcurate talks to the network; `requests` is imported only here. A request that gets no
usable answer raises `Unreachable` (callers turn it into a finding); every other answer, 404
included, is returned for the caller to judge. Imports nothing else from ctcurate.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
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
    timeout: float = 15.0  # seconds, for connecting and for each read
    max_retries: int = 4  # further tries after the first, for 5xx, 429 and connection errors
    backoff_base: float = 0.5  # first wait in seconds; doubles with each retry
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a longer Retry-After than this gives up instead of stalling
    max_concurrent: Mapping[str, int] = field(default_factory=dict)  # per service; default below
    default_concurrent: int = 5
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


class ServiceGate:
    """Concurrency cap and request pacing for one service (one host in production).

    Pacing follows the service's own `x-rate-limit-limit` / `x-rate-limit-interval` headers; a 429
    pauses every thread of the service until its Retry-After has passed.
    """

    def __init__(self, max_concurrent: int, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.slots = threading.BoundedSemaphore(max(1, max_concurrent))
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self.spacing = 0.0  # seconds between request starts
        self.failures_in_row = 0  # requests that ended Unreachable since the last answer

    def wait_turn(self) -> float:
        """Block until this thread may start a request; returns the time waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.spacing
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def observe(self, headers: Mapping[str, str]) -> None:
        limit, interval = headers.get("x-rate-limit-limit"), parse_interval(headers.get("x-rate-limit-interval"))
        try:
            count = float(limit) if limit is not None else 0.0
        except ValueError:
            return
        if count > 0 and interval is not None:
            with self._lock:
                self.spacing = interval / count

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


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
                self._gates[service] = ServiceGate(cap, self._clock, self._sleep)
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
            gate.wait_turn()
            retry_after: float | None = None
            with gate.slots:
                with self._lock:
                    self.stats.requests += 1
                try:
                    resp = self._session().get(url, timeout=policy.timeout, allow_redirects=True)
                    text = resp.text
                except requests.Timeout:
                    reason = f"no answer within {policy.timeout:g} s"
                except requests.RequestException as exc:
                    reason = f"connection failed ({type(exc).__name__})"
                else:
                    headers = {k.lower(): v for k, v in resp.headers.items()}
                    gate.observe(headers)
                    if resp.status_code == 429:
                        retry_after = parse_retry_after(headers.get("retry-after"))
                        reason = "HTTP 429 Too Many Requests"
                    elif resp.status_code >= 500:
                        reason = f"HTTP {resp.status_code}"
                    else:
                        return Answer(resp.status_code, text, headers)
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

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
