"""Polite HTTP for public registries: per-service concurrency, pacing, retries and timeouts.

Owns how ctcurate talks to the network; `requests` is imported only here. A request that gets no
usable answer raises `Unreachable` (callers turn it into a finding); every other answer, 404
included, is returned for the caller to judge. Imports nothing else from ctcurate.

Time is bounded at three levels: one try (`timeout`, the whole answer), one request with its
retries and every wait (`request_deadline`), and the client's whole run (`run_budget`, counted from
its first request; after it `BudgetSpent` is raised at once, so no run outlives it by more than the
time to notice).
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


class BudgetSpent(Unreachable):
    """Not asked, or cut short, because the run's time budget was spent (not the service's fault)."""


@dataclass(frozen=True)
class HttpPolicy:
    """How hard and how politely to try. Defaults suit the public registries."""

    user_agent: str = "ctcurate"
    timeout: float = 15.0  # seconds: one try (connect, headers and body), not each read
    request_deadline: float = 180.0  # seconds: one request, its retries and all its waits together
    run_budget: float | None = None  # seconds from the client's first request; None: unbounded
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

    def __init__(self, wait: float) -> None:
        super().__init__(f"the service's pacing asks for a wait of {wait:.0f} s")
        self.wait = wait


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

    def acquire(self, timeout: float) -> bool:
        """Take a slot; False when none freed up within `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(self._free, timeout) and self._take()

    def _free(self) -> bool:
        return self.in_use < self.limit

    def _take(self) -> bool:
        self.in_use += 1
        return True

    def release(self) -> None:
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
                raise RateLimited(start - now)
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
        self._run_ends: float | None = None  # set by the first request (see `_request_ends`)

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
        """One answer for `url`; raises `Unreachable` when none is usable after the retries, within
        the request's deadline and the run's budget (`BudgetSpent` once that is spent)."""
        gate = self.gate(service)
        if self._gave_up(gate):
            raise Unreachable(url, f"not asked: the last {gate.failures_in_row} requests to this service failed")
        ends = self._request_ends(url)
        try:
            answer = self._get(gate, url, ends)
        except BudgetSpent:
            raise
        except Unreachable:
            with self._lock:
                gate.failures_in_row += 1
            raise
        with self._lock:
            gate.failures_in_row = 0
        return answer

    def _gave_up(self, gate: ServiceGate) -> bool:
        return bool(self.policy.give_up_after) and gate.failures_in_row >= self.policy.give_up_after

    def _request_ends(self, url: str) -> float:
        """When this request must be over: its own deadline, or the run's end if sooner.

        The run's budget starts with its first request, so time spent before asking anything
        (reading a sheet, hashing images) does not count against it.
        """
        now = self._clock()
        with self._lock:
            if self._run_ends is None:
                budget = self.policy.run_budget
                self._run_ends = now + budget if budget is not None else math.inf
            run_ends = self._run_ends
        if now >= run_ends:
            raise BudgetSpent(url, f"not asked: the run's {self.policy.run_budget:g} s budget is spent")
        return min(now + self.policy.request_deadline, run_ends)

    def _out_of_time(self, url: str, ends: float, what: str, ahead: bool = False) -> Unreachable:
        """The failure for a request stopped by its deadline, or by the run's budget (`BudgetSpent`);
        `ahead`: stopped before a wait that would have run past it."""
        if ends == self._run_ends:
            spent = "would have been spent" if ahead else "is spent"
            return BudgetSpent(url, f"{what}: the run's {self.policy.run_budget:g} s budget {spent}")
        passed = "would have passed" if ahead else "has passed"
        return Unreachable(url, f"{what}: the request's {self.policy.request_deadline:g} s deadline {passed}")

    def _get(self, gate: ServiceGate, url: str, ends: float) -> Answer:
        policy = self.policy
        attempt = 0
        while True:
            self._wait_turn(gate, url, ends)
            answer, reason, retry_after = self._try(gate, url, ends)
            if answer is not None:
                return answer
            tries = attempt + 1
            failed = f"{reason}, after {tries} tr{'y' if tries == 1 else 'ies'}"
            if attempt >= policy.max_retries or self._gave_up(gate):
                raise Unreachable(url, failed)
            if retry_after is not None and retry_after > policy.retry_after_max:
                raise Unreachable(url, f"{reason}: asked to wait {retry_after:g} s")
            wait = retry_after if retry_after is not None else self.backoff(attempt)
            if self._clock() + wait >= ends:
                raise self._out_of_time(url, ends, f"{failed}; the wait for another", ahead=True)
            if retry_after is not None:
                gate.pause(wait)  # the whole service waits, not only this thread
            else:
                self._sleep(wait)
            with self._lock:
                self.stats.retries += 1
                self.stats.waits.append(wait)
            attempt += 1

    def _wait_turn(self, gate: ServiceGate, url: str, ends: float) -> None:
        """The service's pacing, waited out unless longer than the cap or the time left."""
        cap, left = self.policy.retry_after_max, ends - self._clock()
        try:
            gate.wait_turn(min(cap, left))
        except RateLimited as exc:
            if exc.wait > cap:
                raise Unreachable(url, f"rate-limited: {exc} (more than {cap:g} s)") from None
            raise self._out_of_time(url, ends, f"rate-limited: {exc}", ahead=True) from None

    def _try(self, gate: ServiceGate, url: str, ends: float) -> tuple[Answer | None, str, float | None]:
        """One try in one of the service's slots: the answer, or why not and any Retry-After."""
        if not gate.slots.acquire(max(0.0, ends - self._clock())):
            raise self._out_of_time(url, ends, "no free connection to the service")
        try:
            if self._gave_up(gate):  # it failed for good while this request waited for its slot
                raise Unreachable(url, f"not asked: the last {gate.failures_in_row} requests to this service failed")
            with self._lock:
                self.stats.requests += 1
            return self._ask(gate, url, ends)
        finally:
            gate.slots.release()

    def _ask(self, gate: ServiceGate, url: str, ends: float) -> tuple[Answer | None, str, float | None]:
        policy = self.policy
        limit = min(policy.timeout, ends - self._clock())
        if limit <= 0:
            raise self._out_of_time(url, ends, "not asked")
        try:
            status, text, headers = self._fetch(url, limit)
        except _Deadline:
            # a server that answers but dribbles its body will not be faster on a retry: give
            # up on it for the rest of the run, so a dripping service costs one deadline
            with self._lock:
                gate.failures_in_row = max(gate.failures_in_row, policy.give_up_after - 1)
            if limit < policy.timeout:
                raise self._out_of_time(url, ends, "the answer was still arriving") from None
            raise Unreachable(url, f"the answer was still arriving after {policy.timeout:g} s") from None
        except requests.Timeout:
            if limit < policy.timeout:
                raise self._out_of_time(url, ends, "no answer yet") from None
            return None, f"no answer within {policy.timeout:g} s", None
        except requests.RequestException as exc:
            return None, f"connection failed ({type(exc).__name__})", None
        gate.observe(headers)
        if status == 429:
            return None, "HTTP 429 Too Many Requests", parse_retry_after(headers.get("retry-after"))
        if status >= 500:
            return None, f"HTTP {status}", None
        return Answer(status, text, headers), "", None

    def _fetch(self, url: str, limit: float) -> tuple[int, str, dict[str, str]]:
        """One GET whose whole answer must arrive within `limit` seconds.

        requests' own timeout is per socket read, so a body dripped a byte at a time never ends;
        here the body is read piecewise against one deadline, each read bounded by the time left.
        """
        deadline = time.monotonic() + limit
        with self._session().get(url, timeout=limit, allow_redirects=True, stream=True) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            body = _read_body(resp.raw, deadline)
            return resp.status_code, body.decode(resp.encoding or "utf-8", errors="replace"), headers

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
