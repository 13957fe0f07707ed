"""DOI resolution online: does a DOI exist, which paper is it, was the preprint published?

Owns the three registry services, the answer cache and the typed `Resolution`; the wire (rate
limits, retries, timeouts) is `polite_http`'s job, the DOI text `doi`'s. Never prints or exits:
network trouble becomes a finding (`doi.unreachable`), never an exception and never "not found".

Services (base URLs are settings: $CTCURATE_DOI_URL, $CTCURATE_CROSSREF_URL, $CTCURATE_BIORXIV_URL):

- existence: doi.org handle API `<doi url>/api/handles/<doi>` (responseCode 1 found, 100 not found);
- metadata: Crossref `<crossref url>/works/<doi>` (title, container, issued, type, preprint links);
- preprints (10.1101/..., 10.64898/...): `<biorxiv url>/details/<server>/<doi>` (server, versions,
  title), and `/pubs/<server>/<doi>` when it says the preprint was published (journal DOI).

Every answer is kept in the SQLite cache (`core/store.py`) with its time and reused for 30 days (answers
that say "not found" for 1 day); `refresh` re-asks, `offline` only reads the cache.

For the other commands (validate --online, add-contribution):

    with open_resolver(offline=False) as resolver:          # or Resolver(settings, cache=...)
        findings = online_doi_findings(refs, resolver)      # refs: DoiRef (row-located) or str
        findings = online_sheet_findings(metadata_dir, resolver)   # the same for a whole sheet
        clash = same_paper_findings(new_refs, sheet_refs, resolver)
        check_rows = online_row_checker(resolver, state.dois)   # add-contribution's RowChecker seam
        same_paper("10.1101/2020.02.25.20021568", "10.1038/s41598-020-76282-0", resolver)
        known_aliases(doi, resolver)                        # {doi, its journal DOI, its preprints}
        resolver.resolve(doi).title                         # the title shown beside a DOI
        resolver.resolve(doi).describe()                    # one line: status, title, journal, ...

Finding codes: doi.not-found (error), doi.malformed (error), doi.same-paper (error for a
contribution, warning inside one sheet), doi.unreachable, doi.bad-answer, doi.not-cached (warnings:
the check could not be made, nothing is claimed about the DOI).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, Self
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict

from ctcurate import __version__
from ctcurate.core.findings import Finding, error, warning
from ctcurate.core.dataset import read_sheet_keys
from ctcurate.core.layout import COVID_CLASS, COVID_SHEET
from ctcurate.core.sheets import SheetError
from ctcurate.core.store import cache_location, open_cache, select_in
from ctcurate.doi.normalize import (
    PreprintId,
    is_valid,
    parse,
    preprint_from_doi,
    preprint_from_filename,
    strip_version,
)
from ctcurate.doi.polite_http import BudgetSpent, HttpPolicy, PoliteClient, Unreachable

DOI_URL_ENV = "CTCURATE_DOI_URL"
CROSSREF_URL_ENV = "CTCURATE_CROSSREF_URL"
BIORXIV_URL_ENV = "CTCURATE_BIORXIV_URL"
MAILTO_ENV = "CTCURATE_MAILTO"

DEFAULT_DOI_URL = "https://doi.org"
DEFAULT_CROSSREF_URL = "https://api.crossref.org"
DEFAULT_BIORXIV_URL = "https://api.biorxiv.org"

# Services are also the concurrency keys: at most this many requests in flight to each, until
# the service's own headers say otherwise. Crossref's pools: 1 at once in the public pool, 3 in
# the polite pool (requests that give a mailto); its `x-concurrency-limit` answers overrule both.
DEFAULT_CONCURRENCY = {"doi": 5, "biorxiv": 3}
CROSSREF_CONCURRENCY = {"public": 1, "polite": 3}
_SERVICE_NAMES = {"doi": "doi.org", "crossref": "Crossref", "biorxiv": "the bioRxiv/medRxiv API"}

# Seconds a run may spend asking the registries, from its first request (`doi resolve --timeout`);
# a cold run of the real sheet (58 DOIs, about 190 requests) needs well under a minute.
DEFAULT_RUN_BUDGET = 300.0

SHEET_FILE = COVID_SHEET
FILE_COLUMN, DOI_COLUMN = "File name", "DOI"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ResolverSettings:
    """Where the services are and how to talk to them."""

    doi_url: str = DEFAULT_DOI_URL
    crossref_url: str = DEFAULT_CROSSREF_URL
    biorxiv_url: str = DEFAULT_BIORXIV_URL
    mailto: str | None = None
    timeout: float = 15.0  # one try of one request
    run_budget: float | None = DEFAULT_RUN_BUDGET  # the whole run's time with the registries; None: unbounded
    max_retries: int = 4
    backoff_base: float = 0.5
    concurrency: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CONCURRENCY))
    workers: int = 16
    ttl_found: timedelta = timedelta(days=30)
    ttl_not_found: timedelta = timedelta(days=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ResolverSettings:
        """Settings from $CTCURATE_* variables; keyword overrides (e.g. mailto from --mailto) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "doi_url": env.get(DOI_URL_ENV) or DEFAULT_DOI_URL,
            "crossref_url": env.get(CROSSREF_URL_ENV) or DEFAULT_CROSSREF_URL,
            "biorxiv_url": env.get(BIORXIV_URL_ENV) or DEFAULT_BIORXIV_URL,
            "mailto": env.get(MAILTO_ENV) or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def user_agent(self) -> str:
        """Crossref's polite pool recognises the mailto in the User-Agent."""
        contact = f"; mailto:{self.mailto}" if self.mailto else ""
        return f"ctcurate/{__version__} (COVID-CT curation toolkit{contact})"

    @property
    def crossref_query(self) -> str:
        """Crossref's polite pool also recognises the mailto as a query parameter."""
        return f"?{urlencode({'mailto': self.mailto})}" if self.mailto else ""

    def http_policy(self) -> HttpPolicy:
        crossref = CROSSREF_CONCURRENCY["polite" if self.mailto else "public"]
        return HttpPolicy(
            user_agent=self.user_agent,
            timeout=self.timeout,
            run_budget=self.run_budget,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            max_concurrent={"crossref": crossref, **self.concurrency},
        )


class Resolution(BaseModel):
    """What the registries say about one DOI. `exists` is None when it could not be checked."""

    model_config = ConfigDict(frozen=True)

    doi: str
    exists: bool | None
    title: str | None = None
    container: str | None = None
    issued: str | None = None  # ISO date, as precise as the registry gives it (2020, 2020-02, 2020-02-19)
    type: str | None = None  # Crossref work type: journal-article, posted-content, ...
    preprint_server: str | None = None  # medrxiv / biorxiv
    versions: int | None = None
    published_doi: str | None = None  # the journal DOI a preprint was published under
    published_container: str | None = None
    preprint_dois: tuple[str, ...] = ()  # preprints of this journal article (Crossref relations)
    source: Literal["network", "cache", "none"] = "none"
    checked_at: datetime | None = None  # time of the oldest answer used
    findings: tuple[Finding, ...] = ()

    @property
    def status(self) -> str:
        return {True: "exists", False: "not found", None: "unknown"}[self.exists]

    def describe(self) -> str:
        """`<doi>: <status>: "<title>" (<container>, <issued>, <type>; <preprint facts>) [<source>]`."""
        line = f"{self.doi}: {self.status}"
        if self.title:
            line += f': "{self.title}"'
        facts = [x for x in (self.container, self.issued, self.type) if x]
        preprint = []
        if self.preprint_server:
            versions = f", {self.versions} version{'s' if self.versions != 1 else ''}" if self.versions else ""
            preprint.append(f"{self.preprint_server} preprint{versions}")
        if self.published_doi:
            journal = f" in {self.published_container}" if self.published_container else ""
            preprint.append(f"published as {self.published_doi}{journal}")
        if self.preprint_dois:
            preprint.append(f"preprint {', '.join(self.preprint_dois)}")
        details = ", ".join(facts) + ("; " if facts and preprint else "") + ", ".join(preprint)
        return line + (f" ({details})" if details else "") + f" [{self.source}]"


# --- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAnswer:
    """One service's answer about one DOI: found or not, the raw body, and when it was asked."""

    key: str  # handle, crossref, details/<server>, pubs/<server>
    found: bool
    body: str
    checked_at: datetime


class DoiCache:
    """The `doi_answers` table of the shared SQLite cache; used from one thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_cache(path)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS doi_answers ("
            " doi TEXT NOT NULL, key TEXT NOT NULL, found INTEGER NOT NULL, body TEXT NOT NULL,"
            " checked_at TEXT NOT NULL, PRIMARY KEY (doi, key))"
        )
        self._conn.commit()

    def load(self, dois: Sequence[str]) -> tuple[dict[str, dict[str, StoredAnswer]], dict[str, list[str]]]:
        """Cached answers by DOI and key, and the rows that were damaged (dropped: a cache is only a
        cache, they are asked again) by DOI."""
        out: dict[str, dict[str, StoredAnswer]] = {}
        damaged: dict[str, list[str]] = {}
        sql = "SELECT doi, key, found, body, checked_at FROM doi_answers WHERE doi IN ({marks})"
        for doi, key, found, body, checked in select_in(self._conn, sql, list(dict.fromkeys(dois))):
            answer = _stored(key, found, body, checked)
            if answer is None:
                damaged.setdefault(str(doi), []).append(str(key))
            else:
                out.setdefault(doi, {})[key] = answer
        for doi, keys in damaged.items():
            self.drop(doi, keys)
        return out, damaged

    def drop(self, doi: str, keys: Iterable[str]) -> None:
        with self._conn:
            self._conn.executemany("DELETE FROM doi_answers WHERE doi = ? AND key = ?", [(doi, k) for k in keys])

    def save(self, doi: str, answers: Iterable[StoredAnswer]) -> None:
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO doi_answers (doi, key, found, body, checked_at) VALUES (?, ?, ?, ?, ?)",
                [(doi, a.key, int(a.found), a.body, a.checked_at.isoformat()) for a in answers],
            )

    def close(self) -> None:
        self._conn.close()


def _stored(key: object, found: object, body: object, checked: object) -> StoredAnswer | None:
    """A cache row as a `StoredAnswer`; None when a field is not what this module writes."""
    if not isinstance(key, str) or found not in (0, 1) or not isinstance(body, str) or not isinstance(checked, str):
        return None
    try:
        when = datetime.fromisoformat(checked)
    except ValueError:
        return None
    return StoredAnswer(key, bool(found), body, when if when.tzinfo else when.replace(tzinfo=UTC))


# --- reading the services' answers (pure) ---------------------------------------------------


class _BadAnswer(Exception):
    pass


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadAnswer(f"not JSON ({exc.msg} at character {exc.pos})") from None


def judge_handle(status: int, text: str) -> bool:
    """doi.org handle API: responseCode 1 (or 200, values absent) = registered, 100 = not."""
    body = _json(text) if text.strip() else None
    code = body.get("responseCode") if isinstance(body, dict) else None
    if code in (1, 200) and status == 200:
        return True
    if code == 100:
        return False
    raise _BadAnswer(f"HTTP {status}, responseCode {code!r}")


def judge_crossref(status: int, text: str) -> bool:
    if status == 404:
        return False  # not at Crossref: may be registered elsewhere (DataCite, mEDRA, ...)
    if status != 200:
        raise _BadAnswer(f"HTTP {status}")
    body = _json(text)
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise _BadAnswer("no 'message' object")
    return True


def judge_biorxiv(status: int, text: str) -> bool:
    """The bioRxiv API answers HTTP 200 even for errors: `messages[0].status` tells "ok" and
    "no posts found" (a real answer) from an error, which says nothing about the DOI."""
    if status == 404:
        return False
    if status != 200:
        raise _BadAnswer(f"HTTP {status}")
    body = _json(text)
    if not isinstance(body, dict) or not isinstance(body.get("collection", []), list):
        raise _BadAnswer("no 'collection' list")
    collection = body.get("collection")
    if not collection:
        said = _api_status(body)
        if said is not None and said != "no posts found":
            raise _BadAnswer(f"the API reported {said!r}")
    return bool(collection)


def _api_status(body: Mapping[str, Any]) -> str | None:
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    status = first.get("status") if isinstance(first, dict) else None
    return " ".join(str(status).split()).lower() if status is not None else None


def _first(value: object) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value).strip() if value not in (None, "") else None


def _date_parts(message: Mapping[str, Any]) -> str | None:
    for key in ("issued", "published", "published-online", "published-print", "posted", "created"):
        parts = (message.get(key) or {}).get("date-parts") or []
        if parts and parts[0] and parts[0][0] is not None:
            return "-".join(f"{int(p):02d}" if i else f"{int(p):04d}" for i, p in enumerate(parts[0]))
    return None


def _relation_dois(message: Mapping[str, Any], name: str) -> list[str]:
    items = (message.get("relation") or {}).get(name) or []
    found = [parse(i.get("id")).doi for i in items if isinstance(i, dict) and i.get("id-type") == "doi"]
    return [d for d in found if is_valid(d)]


def read_crossref(text: str) -> dict[str, Any]:
    """Title, container, issued, type and preprint links from a Crossref `works` answer."""
    message = json.loads(text)["message"]
    institution = message.get("institution") or []
    return {
        "title": _first(message.get("title")),
        "container": _first(message.get("container-title"))
        or (_first([i.get("name") for i in institution if isinstance(i, dict)]) if institution else None),
        "issued": _date_parts(message),
        "type": _first(message.get("type")),
        "preprint_dois": tuple(_relation_dois(message, "has-preprint")),
        "published_doi": next(iter(_relation_dois(message, "is-preprint-of")), None),
    }


def read_details(text: str) -> dict[str, Any]:
    """The latest version of a preprint from a bioRxiv/medRxiv `details` answer."""
    versions = json.loads(text)["collection"]
    latest = max(versions, key=lambda v: int(v.get("version") or 0))
    published = latest.get("published")
    return {
        "title": _first(latest.get("title")),
        "issued": _first(latest.get("date")),
        "versions": len(versions),
        "published": None if published in (None, "", "NA") else parse(published).doi,
        "says_published": "published" not in latest or published not in ("", "NA"),
    }


def _pubs_preprint(entry: Mapping[str, Any]) -> str:
    """The preprint a `/pubs` record is about: `preprint_doi` (older answers: `biorxiv_doi`)."""
    return strip_version(parse(entry.get("preprint_doi") or entry.get("biorxiv_doi")).doi)


def read_pubs(text: str, preprint: str | None = None) -> dict[str, Any]:
    """The journal version from a `/pubs` answer: the record of `preprint` when given, else the first."""
    records = [e for e in json.loads(text)["collection"] if isinstance(e, dict)]
    entry = next((e for e in records if preprint and _pubs_preprint(e) == strip_version(preprint)), records[0])
    doi = parse(entry.get("published_doi")).doi
    return {"published_doi": doi or None, "published_container": _first(entry.get("published_journal"))}


def read_reverse_pubs(text: str, journal_doi: str) -> tuple[str, ...]:
    """The preprints a `/pubs/<server>/<journal DOI>` answer gives for that journal article."""
    records = [e for e in json.loads(text)["collection"] if isinstance(e, dict)]
    found = [_pubs_preprint(e) for e in records if parse(e.get("published_doi")).doi == journal_doi]
    return tuple(dict.fromkeys(d for d in found if is_valid(d)))


def url_path(doi: str) -> str:
    """The DOI as a URL path: `?`, `#`, `%` escaped, and `.`/`..` segments too, so that no DOI can
    make the client ask about a different one (`10.1/../../10.1136/bmj.m606`)."""
    return "/".join(seg.replace(".", "%2E") if seg in (".", "..") else quote(seg, safe="()") for seg in doi.split("/"))


def _readable(reader: Callable[[str], object], text: str) -> bool:
    try:
        _check_readable(reader, text)
    except _BadAnswer:
        return False
    return True


def _check_readable(reader: Callable[[str], object], text: str) -> None:
    """A found answer must also be one the reader understands, before it is trusted or cached."""
    try:
        reader(text)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise _BadAnswer(f"unexpected structure ({type(exc).__name__}: {exc})") from None


# --- the resolver ---------------------------------------------------------------------------


_BUDGET_HINT = (
    "nothing is claimed about this DOI; the run's time (--timeout) ran out before it was checked:"
    " run again to go on (the answers so far are cached)"
)


class _Lookup:
    """One DOI's answers, gathered in one worker thread: from the cache when fresh, else asked."""

    def __init__(self, resolver: Resolver, doi: str, cached: Mapping[str, StoredAnswer]) -> None:
        self.r = resolver
        self.doi = doi
        self.cached = cached
        self.fetched: list[StoredAnswer] = []
        self.used: list[StoredAnswer] = []
        self.findings: list[Finding] = []
        self.not_cached: list[str] = []
        self.damaged: list[str] = []  # cache keys whose stored body this module cannot read
        self.out_of_time = False  # the run's budget was spent: nothing more is asked for this DOI

    def _fresh(self, a: StoredAnswer) -> bool:
        ttl = self.r.settings.ttl_found if a.found else self.r.settings.ttl_not_found
        return self.r.now() - a.checked_at < ttl

    def answer(
        self,
        key: str,
        service: str,
        url: str,
        judge: Callable[[int, str], bool],
        reader: Callable[[str], object],
    ) -> StoredAnswer | None:
        hit = self.cached.get(key)
        if hit and hit.found and not _readable(reader, hit.body):
            self.damaged.append(key)
            hit = None
        if hit and (self.r.offline or (not self.r.refresh and self._fresh(hit))):
            self.used.append(hit)
            return hit
        if self.r.offline:
            self.not_cached.append(_SERVICE_NAMES[service])
            return None
        if self.out_of_time:  # the run's budget ran out on an earlier service: already reported
            return self._stale(hit)
        name = _SERVICE_NAMES[service]
        try:
            reply = self.r.client.get(service, url)
            found = judge(reply.status, reply.text)
            if found:
                _check_readable(reader, reply.text)
        except BudgetSpent as exc:
            self.out_of_time = True
            return self._failed(hit, "doi.unreachable", f"could not reach {name}: {exc.reason}", _BUDGET_HINT)
        except Unreachable as exc:
            return self._failed(hit, "doi.unreachable", f"could not reach {name}: {exc.reason}")
        except _BadAnswer as exc:
            return self._failed(hit, "doi.bad-answer", f"unusable answer from {name}: {exc}")
        stored = StoredAnswer(key, found, reply.text if found else "", self.r.now())
        self.fetched.append(stored)
        self.used.append(stored)
        return stored

    def _failed(self, stale: StoredAnswer | None, code: str, message: str, hint: str = "") -> StoredAnswer | None:
        """A failed request: fall back on an expired cached "found" answer if there is one, and say so."""
        used = self._stale(stale)
        if used is not None:
            hint = f"used the answer cached on {used.checked_at.strftime('%Y-%m-%d')}; run again later to refresh it"
        hint = hint or "nothing is claimed about this DOI; retry later, or use --offline for cached answers"
        self.findings.append(warning(code, message, value=self.doi, hint=hint))
        return used

    def _stale(self, stale: StoredAnswer | None) -> StoredAnswer | None:
        """An expired cached answer, used when nothing newer can be had; an expired "not found"
        is not reused: the DOI may have been registered since."""
        if stale is None or not stale.found:
            return None
        self.used.append(stale)
        return stale

    def run(self) -> Resolution:
        s = self.r.settings
        path = url_path(self.doi)
        fields: dict[str, Any] = {}
        handle_url = f"{s.doi_url.rstrip('/')}/api/handles/{path}"
        handle = self.answer("handle", "doi", handle_url, judge_handle, json.loads)
        exists = handle.found if handle else None
        if exists is not False:
            works_url = f"{s.crossref_url.rstrip('/')}/works/{path}{s.crossref_query}"
            crossref = self.answer("crossref", "crossref", works_url, judge_crossref, read_crossref)
            if crossref and crossref.found:
                fields.update(read_crossref(crossref.body))
                exists = True if exists is None else exists
            preprint = preprint_from_doi(self.doi)
            if preprint:
                exists = self._preprint(preprint.server, path, fields, exists)
            elif exists and not fields.get("preprint_dois"):
                self._reverse_preprint(path, fields)
        if exists is False:
            self.findings.append(
                error(
                    "doi.not-found",
                    "DOI is not registered (doi.org: handle not found)",
                    value=self.doi,
                    hint="check the paper's DOI on its landing page",
                )
            )
        self._merge_unreachable()
        if self.damaged:
            again = "not checked (offline)" if self.r.offline else "asked again"
            self.findings.append(
                warning(
                    "doi.cache-damaged",
                    f"damaged cached answer(s) ({', '.join(self.damaged)}) dropped and {again}",
                    value=self.doi,
                    hint="nothing to do: the cache is rebuilt as answers come in",
                )
            )
        if self.not_cached:
            self.findings.append(
                warning(
                    "doi.not-cached",
                    f"offline and no cached answer from {', '.join(dict.fromkeys(self.not_cached))}: not checked",
                    value=self.doi,
                    hint="run once without --offline to fill the cache",
                )
            )
        source: Literal["network", "cache", "none"] = "network" if self.fetched else ("cache" if self.used else "none")
        return Resolution(
            doi=self.doi,
            exists=exists,
            source=source,
            checked_at=min((a.checked_at for a in self.used), default=None),
            findings=tuple(self.findings),
            **{k: v for k, v in fields.items() if v not in (None, ())},
        )

    def _merge_unreachable(self) -> None:
        """One `doi.unreachable` per DOI, naming every service that could not be reached."""
        down = [f for f in self.findings if f.code == "doi.unreachable"]
        if len(down) > 1:
            merged = down[0].model_copy(update={"message": "; ".join(f.message for f in down)})
            self.findings = [f for f in self.findings if f.code != "doi.unreachable"] + [merged]

    def _preprint(self, server: str, path: str, fields: dict[str, Any], exists: bool | None) -> bool | None:
        """Server, versions and published journal DOI from the bioRxiv API; updates `fields`."""
        base = self.r.settings.biorxiv_url.rstrip("/")
        if server in ("medrxiv", "biorxiv"):
            servers = [server]
        else:  # 10.64898 does not tell; Crossref's institution usually does
            hint = (fields.get("container") or "").lower()
            servers = sorted(("medrxiv", "biorxiv"), key=lambda name: name != hint)
        for name in servers:
            details_url = f"{base}/details/{name}/{path}"
            details = self.answer(f"details/{name}", "biorxiv", details_url, judge_biorxiv, read_details)
            if details is None:
                return exists
            if not details.found:
                continue
            info = read_details(details.body)
            fields["preprint_server"] = name
            fields["versions"] = info["versions"]
            if not fields.get("title"):
                fields["title"] = info["title"]
            if not fields.get("issued"):
                fields["issued"] = info["issued"]
            if info["published"]:
                fields["published_doi"] = info["published"]
            if info["says_published"]:
                pubs = self.answer(f"pubs/{name}", "biorxiv", f"{base}/pubs/{name}/{path}", judge_biorxiv, read_pubs)
                if pubs and pubs.found:
                    fields.update({k: v for k, v in read_pubs(pubs.body, self.doi).items() if v})
            return True if exists is None else exists
        return exists


    def _reverse_preprint(self, path: str, fields: dict[str, Any]) -> None:
        """A journal article's preprint from bioRxiv's `/pubs/<server>/<journal DOI>`, for when
        Crossref has no `has-preprint` relation (many publishers never deposit one)."""
        base = self.r.settings.biorxiv_url.rstrip("/")
        for name in ("medrxiv", "biorxiv"):
            pubs = self.answer(f"pubs/{name}", "biorxiv", f"{base}/pubs/{name}/{path}", judge_biorxiv, json.loads)
            if pubs is None:
                return
            found = read_reverse_pubs(pubs.body, self.doi) if pubs.found else ()
            if found:
                fields["preprint_dois"] = found
                return


class Resolver:
    """Resolves DOIs through the three services, with the cache; each DOI is asked once per run."""

    def __init__(
        self,
        settings: ResolverSettings | None = None,
        *,
        cache: DoiCache | None = None,
        offline: bool = False,
        refresh: bool = False,
        client: PoliteClient | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings or ResolverSettings.from_env()
        self.cache = cache
        self.offline = offline
        self.refresh = refresh
        self.client = client or PoliteClient(self.settings.http_policy())
        self.now = now
        self._done: dict[str, Resolution] = {}

    def resolve(self, doi: str) -> Resolution:
        return next(iter(self.resolve_many([doi]).values()))

    def resolve_many(self, dois: Iterable[str]) -> dict[str, Resolution]:
        """Resolution per distinct normalized DOI, in first-seen order; concurrent over DOIs.

        Each DOI is asked at most once per resolver (a preprint's `vN` forms ask for the DOI itself).
        """
        order: dict[str, str] = {}  # normalized DOI -> as given
        for raw in dois:
            order.setdefault(parse(raw).doi, str(raw))
        query = {d: strip_version(d) for d in order}  # a preprint's versions share one DOI
        todo = list(dict.fromkeys(q for q in query.values() if q not in self._done))
        for d in [q for q in todo if not is_valid(q)]:
            raw = next(r for n, r in order.items() if query[n] == d)
            self._done[d] = Resolution(
                doi=d,
                exists=None,
                findings=(error("doi.malformed", "not a DOI (expected 10.NNNN/suffix)", value=raw),),
            )
        todo = [d for d in todo if d not in self._done]
        cached, damaged = self.cache.load(todo) if self.cache and todo else ({}, {})
        lookups = [_Lookup(self, d, cached.get(d, {})) for d in todo]
        for lookup in lookups:
            lookup.damaged.extend(damaged.get(lookup.doi, []))
        if lookups:
            workers = max(1, min(self.settings.workers, len(lookups)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctcurate-doi") as pool:
                for lookup, resolution in zip(lookups, pool.map(_Lookup.run, lookups)):
                    self._done[lookup.doi] = resolution
                    if self.cache and lookup.damaged:
                        self.cache.drop(lookup.doi, lookup.damaged)
                    if self.cache and lookup.fetched:
                        self.cache.save(lookup.doi, lookup.fetched)
        return {d: self._done[query[d]] for d in order}

    def close(self) -> None:
        self.client.close()
        if self.cache:
            self.cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_resolver(
    cache_path: Path | None = None,
    *,
    offline: bool = False,
    refresh: bool = False,
    mailto: str | None = None,
    settings: ResolverSettings | None = None,
) -> Iterator[Resolver]:
    """A resolver over the cache file `store.cache_location(cache_path)` names.

    Raises `sqlite3.Error` / `OSError` when the cache cannot be opened (a usage/I-O error).
    """
    cache = DoiCache(cache_location(cache_path))
    settings = settings or ResolverSettings.from_env(mailto=mailto)
    resolver = Resolver(settings, cache=cache, offline=offline, refresh=refresh)
    try:
        yield resolver
    finally:
        resolver.close()


# --- what the other commands call -----------------------------------------------------------


@dataclass(frozen=True)
class DoiRef:
    """A DOI and where it was read (sheet row as Excel shows it); `derived` = from the file name."""

    doi: str
    file: str | None = None
    row: int | None = None
    column: str | None = None
    derived: bool = False
    alternatives: tuple[str, ...] = ()  # other DOIs the file name may mean (near the 10.64898 change-over)

    @property
    def norm(self) -> str:
        return parse(self.doi).doi


def derived_ref(pre: PreprintId, **where: Any) -> DoiRef:
    """The DOI a preprint file name gives, with the other prefix's DOI when its date is near the change."""
    return DoiRef(doi=pre.doi, derived=True, alternatives=pre.alternatives, **where)


def settle_derived(refs: Sequence[DoiRef], resolver: Resolver) -> list[DoiRef]:
    """Derived DOIs whose prefix the file name's date cannot tell: the candidate the registry has.

    Where neither (or both) exist, the date's prefix stays, and its answer is what gets reported.
    """
    open_refs = [r for r in refs if r.alternatives]
    if not open_refs:
        return list(refs)
    found = resolver.resolve_many(d for r in open_refs for d in (r.doi, *r.alternatives))
    out = []
    for ref in refs:
        if ref.alternatives:
            existing = [d for d in (ref.doi, *ref.alternatives) if found[parse(d).doi].exists]
            ref = replace(ref, doi=existing[0] if len(existing) == 1 else ref.doi, alternatives=())
        out.append(ref)
    return out


def _as_refs(items: Iterable[DoiRef | str]) -> list[DoiRef]:
    return [i if isinstance(i, DoiRef) else DoiRef(doi=str(i)) for i in items]


def aliases(resolution: Resolution) -> frozenset[str]:
    """The DOIs that name the same paper: itself (without version), its journal DOI, its preprints."""
    names = {resolution.doi, strip_version(resolution.doi)}
    if resolution.published_doi:
        names.add(resolution.published_doi)
    names.update(strip_version(d) for d in resolution.preprint_dois)
    return frozenset(n for n in names if n)


def known_aliases(doi: str, resolver: Resolver) -> frozenset[str]:
    return aliases(resolver.resolve(doi))


def same_paper(doi_a: str, doi_b: str, resolver: Resolver) -> bool:
    """True when both DOIs name one paper (identical, or a preprint and its journal version)."""
    found = resolver.resolve_many([doi_a, doi_b])
    a, b = found[parse(doi_a).doi], found[parse(doi_b).doi]
    return bool(aliases(a) & aliases(b))


def _located(f: Finding, ref: DoiRef, others: Sequence[DoiRef]) -> Finding:
    rows = sorted({o.row for o in others if o.row is not None and o.row != ref.row})
    more = f" (same DOI also in rows {', '.join(map(str, rows))})" if rows else ""
    derived = " (derived from the file name)" if ref.derived else ""
    return f.model_copy(
        update={
            "file": ref.file,
            "row": ref.row,
            "column": ref.column,
            "value": ref.doi,
            "message": f.message + derived + more,
        }
    )


def online_doi_findings(refs: Iterable[DoiRef | str], resolver: Resolver, *, every_row: bool = False) -> list[Finding]:
    """Findings for DOIs read from a sheet: not registered, unchecked, or one paper under two DOIs.

    Each distinct DOI is asked once; its findings are placed at its first row and name the others,
    or, with `every_row` (a verdict per row, as add-contribution needs), repeated at each row.
    """
    all_refs = settle_derived(_as_refs(refs), resolver)
    groups: dict[str, list[DoiRef]] = {}
    for ref in all_refs:
        groups.setdefault(ref.norm, []).append(ref)
    found = resolver.resolve_many(groups)
    out: list[Finding] = []
    for doi, group in groups.items():
        for ref in group if every_row else group[:1]:
            out.extend(_located(f, ref, [] if every_row else group) for f in found[doi].findings)
    seen: set[frozenset[str]] = set()
    dois = [d for d in groups if found[d].exists]
    for i, a in enumerate(dois):
        for b in dois[i + 1 :]:
            pair = frozenset((a, b))
            if pair not in seen and aliases(found[a]) & aliases(found[b]):
                seen.add(pair)
                out.append(_same_paper_finding(groups[b][0], groups[a][0], found[b], found[a], warning))
    return out


def _is_preprint_of(pre: Resolution, journal: Resolution) -> bool:
    return pre.published_doi == journal.doi or strip_version(pre.doi) in journal.preprint_dois


def _relation(a: Resolution, b: Resolution) -> str:
    if _is_preprint_of(a, b):
        return f"{a.doi} is the preprint of {b.doi}"
    if _is_preprint_of(b, a):
        return f"{a.doi} is the journal version of the preprint {b.doi}"
    return f"{a.doi} and {b.doi} name the same paper"


def _same_paper_finding(
    ref: DoiRef, other: DoiRef, res: Resolution, other_res: Resolution, make: Callable[..., Finding]
) -> Finding:
    where = f" (row {other.row})" if other.row is not None else (f" (cited by {other.file})" if other.file else "")
    title = res.title or other_res.title
    titled = f": {title!r}" if title else ""
    return make(
        "doi.same-paper",
        f"{_relation(res, other_res)}{where}; one paper{titled}",
        file=ref.file,
        row=ref.row,
        column=ref.column,
        value=ref.doi,
        hint="the images and patients may already be in the dataset; cite one DOI for the paper",
    )


def same_paper_findings(
    new: Iterable[DoiRef | str], existing: Iterable[DoiRef | str], resolver: Resolver
) -> list[Finding]:
    """Errors for new DOIs that name a paper already present under another DOI.

    Identical DOIs are not reported here (whether more images of a known paper are welcome is the
    caller's policy); network trouble shows up as warnings from `online_doi_findings`.
    """
    new_refs, old_refs = _as_refs(new), _as_refs(existing)
    found = resolver.resolve_many([r.norm for r in new_refs + old_refs])
    by_alias: dict[str, DoiRef] = {}
    for ref in old_refs:
        for name in aliases(found[ref.norm]):
            by_alias.setdefault(name, ref)
    out: list[Finding] = []
    reported: set[tuple[int | None, str, str]] = set()
    for ref in new_refs:
        res = found[ref.norm]
        for name in sorted(aliases(res)):
            old = by_alias.get(name)
            if old is None or old.norm == ref.norm or (ref.row, ref.norm, old.norm) in reported:
                continue
            reported.add((ref.row, ref.norm, old.norm))  # one error per row: each row gets its verdict
            out.append(_same_paper_finding(ref, old, res, found[old.norm], error))
    return out


class _SheetRowLike(Protocol):
    """What `online_row_checker` needs of a row (add-contribution's `SheetRow` has it)."""

    @property
    def row(self) -> int: ...

    def text(self, column: str) -> str: ...


def online_row_checker(
    resolver: Resolver, dataset_dois: Mapping[str, str | None] | Iterable[str]
) -> Callable[[Sequence[_SheetRowLike], str], list[Finding]]:
    """add-contribution's `RowChecker` for the online DOI rules, row by row.

    Each row's DOI (or the preprint DOI its file name gives) must be registered (`doi.not-found`,
    error), and must not be the other DOI of a paper the dataset has (`doi.same-paper`, error:
    a preprint whose journal version is in the dataset, or the reverse). `dataset_dois`: the
    dataset's DOIs, optionally mapped to a file that cites each (shown in the message).
    """
    cited = dict(dataset_dois) if isinstance(dataset_dois, Mapping) else dict.fromkeys(dataset_dois)
    existing = [DoiRef(doi=d, file=example or None) for d, example in cited.items()]

    def check(rows: Sequence[_SheetRowLike], sheet_name: str) -> list[Finding]:
        refs: list[DoiRef] = []
        for r in rows:
            raw, name = r.text(DOI_COLUMN).strip(), r.text(FILE_COLUMN).strip()
            if raw:
                if (parsed := parse(raw)).valid:  # malformed ones are the offline checks' to report
                    refs.append(DoiRef(doi=parsed.doi, file=sheet_name, row=r.row, column=DOI_COLUMN))
            elif pre := preprint_from_filename(name):
                refs.append(derived_ref(pre, file=sheet_name, row=r.row, column=DOI_COLUMN))
        findings = online_doi_findings(refs, resolver, every_row=True)
        return findings + same_paper_findings(refs, existing, resolver)

    return check


# --- the sheet (one small reader, to be swapped for the validating one) ---------------------


def read_sheet_dois(metadata_dir: Path) -> tuple[list[DoiRef], list[Finding]]:
    """Every row's DOI (normalized), or the preprint DOI its file name implies when the cell is empty.

    The cells come from `core.dataset` (the reader every command shares); raises `SheetError`.
    """
    path = metadata_dir / SHEET_FILE
    refs: list[DoiRef] = []
    findings: list[Finding] = []
    for key in read_sheet_keys(path, COVID_CLASS, {"file_name": FILE_COLUMN, "doi": DOI_COLUMN}):
        if key.doi:
            parsed = parse(key.doi)
            if parsed.valid:
                refs.append(DoiRef(doi=parsed.doi, file=path.name, row=key.row, column=DOI_COLUMN))
            else:
                findings.append(error("doi.malformed", "not a DOI (expected 10.NNNN/suffix)", value=key.doi,
                                      file=path.name, row=key.row, column=DOI_COLUMN))
        elif key.file_name and (pre := preprint_from_filename(key.file_name)):
            refs.append(derived_ref(pre, file=path.name, row=key.row, column=DOI_COLUMN))
    return refs, findings


def online_sheet_findings(metadata_dir: Path, resolver: Resolver) -> list[Finding]:
    """`validate --online` in one call: the online findings for every DOI of the sheet.

    Malformed cells are left out (the offline checks report them); raises `SheetError`.
    """
    refs, _malformed = read_sheet_dois(metadata_dir)
    return online_doi_findings(refs, resolver)


def cache_error_message(path: Path, exc: BaseException) -> str:
    """One line for a cache that cannot be opened (for the CLI's exit 2)."""
    kind = "not an SQLite file" if isinstance(exc, sqlite3.DatabaseError) else type(exc).__name__
    return f"{path}: cannot open the cache ({kind}: {exc})"


__all__ = [
    "DoiCache",
    "DoiRef",
    "Resolution",
    "Resolver",
    "ResolverSettings",
    "SheetError",
    "StoredAnswer",
    "aliases",
    "known_aliases",
    "online_doi_findings",
    "online_row_checker",
    "online_sheet_findings",
    "open_resolver",
    "read_sheet_dois",
    "same_paper",
    "same_paper_findings",
    "settle_derived",
]


def resolve_refs(refs: Sequence[DoiRef], resolver: Resolver, from_sheet: bool) -> tuple[list[Resolution], list[Finding]]:
    """`doi resolve`: one answer per distinct paper and the findings (located on the sheet's rows when `from_sheet`)."""
    refs = settle_derived(refs, resolver)  # a file name dated near the 10.64898 change-over
    resolved = resolver.resolve_many(r.norm for r in refs)
    results = list({r.doi: r for r in resolved.values()}.values())  # `v2` forms share one answer
    if from_sheet:
        return results, online_doi_findings(refs, resolver)
    return results, [f for res in results for f in res.findings]
