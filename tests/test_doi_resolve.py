"""DOI resolution against a local stand-in for doi.org, Crossref and bioRxiv/medRxiv."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_registry import RECORDED, FakeRegistry, Reply
from hypothesis import given, settings
from hypothesis import strategies as st

from ctcurate.doi.normalize import preprint_from_filename
from ctcurate.doi.resolve import (
    DEFAULT_CONCURRENCY,
    DoiCache,
    DoiRef,
    Resolution,
    Resolver,
    ResolverSettings,
    _BadAnswer,
    _check_readable,
    aliases,
    judge_biorxiv,
    judge_crossref,
    judge_handle,
    known_aliases,
    online_doi_findings,
    read_crossref,
    read_details,
    read_pubs,
    read_sheet_dois,
    same_paper,
    same_paper_findings,
)

BMJ = "10.1136/bmj.m606"
LANCET = "10.1016/s0140-6736(20)30154-9"
PREPRINT = "10.1101/2020.02.25.20021568"
JOURNAL = "10.1038/s41598-020-76282-0"
MISSING = "10.1136/bmj.m9999"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text(encoding="utf-8")


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch):
    with FakeRegistry() as reg:
        reg.not_found.add(MISSING)
        for name, url in reg.urls.items():
            monkeypatch.setenv(name, url)
        yield reg


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make(cache_path: Path | None = None, *, clock: Clock | None = None, **kwargs: object) -> Resolver:
    settings = ResolverSettings.from_env(timeout=2.0, max_retries=2, backoff_base=0.01)
    cache = DoiCache(cache_path) if cache_path else None
    extra = {"now": clock} if clock else {}
    return Resolver(settings, cache=cache, **extra, **kwargs)  # type: ignore[arg-type]


# --- pure readers ---------------------------------------------------------------------------


def test_judge_handle_codes():
    assert judge_handle(200, '{"responseCode": 1, "handle": "10.1/x"}') is True
    assert judge_handle(404, '{"responseCode": 100, "handle": "10.1/x"}') is False
    with pytest.raises(_BadAnswer):
        judge_handle(404, "<html>Not Found</html>")  # a wrong URL is not a "not found"
    with pytest.raises(_BadAnswer):
        judge_handle(200, '{"responseCode": 2}')


def test_judge_crossref_and_biorxiv():
    assert judge_crossref(404, "Resource not found.") is False
    assert judge_crossref(200, recorded(f"crossref__{BMJ.replace('/', '_')}.json")) is True
    with pytest.raises(_BadAnswer, match="not JSON"):
        judge_crossref(200, '{"message": ')
    assert judge_biorxiv(200, '{"messages": [{"status": "no posts found"}], "collection": []}') is False
    with pytest.raises(_BadAnswer):
        judge_biorxiv(200, '{"collection": "nope"}')


def test_read_crossref_journal_article():
    meta = read_crossref(recorded(f"crossref__{LANCET.replace('/', '_')}.json"))
    assert meta["title"].startswith("A familial cluster of pneumonia associated with the 2019 novel coronavirus")
    assert meta["container"] == "The Lancet"
    assert meta["issued"] == "2020-02"
    assert meta["type"] == "journal-article"
    assert meta["preprint_dois"] == ()


def test_read_crossref_relations_both_ways():
    pre = read_crossref(recorded(f"crossref__{PREPRINT.replace('/', '_')}.json"))
    assert pre["type"] == "posted-content" and pre["container"] == "medRxiv"
    assert pre["published_doi"] == JOURNAL
    journal = read_crossref(recorded(f"crossref__{JOURNAL.replace('/', '_')}.json"))
    assert journal["preprint_dois"] == (PREPRINT,)


def test_read_details_takes_latest_version_and_pubs():
    details = read_details(recorded(f"details__medrxiv__{PREPRINT.replace('/', '_')}.json"))
    assert details["versions"] == 2 and details["issued"] == "2020-03-01"
    assert details["published"] == JOURNAL and details["says_published"]
    pubs = read_pubs(recorded(f"pubs__medrxiv__{PREPRINT.replace('/', '_')}.json"))
    assert pubs == {"published_doi": JOURNAL, "published_container": "Scientific Reports"}


def test_url_path_cannot_point_at_another_doi():
    from ctcurate.doi.resolve import url_path

    assert url_path(LANCET) == "10.1016/s0140-6736(20)30154-9"
    assert url_path("10.1/a?b#c%d e") == "10.1/a%3Fb%23c%25d%20e"
    assert url_path("10.1234/../../10.1136/bmj.m606") == "10.1234/%2E%2E/%2E%2E/10.1136/bmj.m606"


def test_dot_segments_do_not_resolve_another_doi(registry):
    with make() as r:
        res = r.resolve("10.1234/../10.1136/bmj.m606")  # else asks /api/handles/10.1136/bmj.m606
    assert registry.count("handle", BMJ) == 0
    assert res.doi == "10.1234/../10.1136/bmj.m606"
    assert "Clinical findings" not in (res.title or "")  # not the BMJ paper's answer


# --- settings -------------------------------------------------------------------------------


def test_settings_from_env_and_user_agent():
    env = {"CTCURATE_DOI_URL": "http://mirror/doi", "CTCURATE_MAILTO": "env@example.org"}
    s = ResolverSettings.from_env(env)
    assert s.doi_url == "http://mirror/doi" and s.crossref_url == "https://api.crossref.org"
    assert "mailto:env@example.org" in s.user_agent and s.user_agent.startswith("ctcurate/")
    assert ResolverSettings.from_env(env, mailto="cli@example.org").mailto == "cli@example.org"
    assert "mailto" not in ResolverSettings.from_env({}).user_agent


def test_every_test_points_the_services_away_from_the_internet():
    s = ResolverSettings.from_env()
    for url in (s.doi_url, s.crossref_url, s.biorxiv_url):
        assert url.startswith("http://127.0.0.1:")


# --- resolving ------------------------------------------------------------------------------


def test_journal_article(registry):
    with make() as r:
        res = r.resolve(BMJ)
    assert res.exists is True
    assert res.title.startswith("Clinical findings in a group of patients infected with the 2019 novel coronavirus")
    assert (res.container, res.issued, res.type) == ("BMJ", "2020-02-19", "journal-article")
    assert res.source == "network" and res.findings == ()
    assert registry.count("handle", BMJ) == 1 and registry.count("works", BMJ) == 1
    assert registry.count("details") == 0  # not a preprint


def test_preprint_with_published_version(registry):
    with make() as r:
        res = r.resolve(PREPRINT)
    assert res.exists is True
    assert (res.preprint_server, res.versions) == ("medrxiv", 2)
    assert (res.published_doi, res.published_container) == (JOURNAL, "Scientific Reports")
    for kind in ("handle", "works", "details", "pubs"):
        assert registry.count(kind, PREPRINT) == 1, kind


def test_unpublished_preprint_does_not_ask_pubs(registry):
    with make() as r:
        res = r.resolve("10.1101/2020.03.04.20031047v2")  # versioned form asks for the DOI itself
    assert res.doi == "10.1101/2020.03.04.20031047"
    assert res.preprint_server == "medrxiv" and res.published_doi is None
    assert registry.count("pubs") == 0
    assert registry.count("details", "10.1101/2020.03.04.20031047") == 1


def test_new_preprint_prefix_finds_its_server(registry):
    with make() as r:
        res = r.resolve("10.64898/2025.12.03.123456")
    assert res.exists is True and res.preprint_server == "biorxiv"


def test_not_found_is_an_error_and_stops_there(registry):
    with make() as r:
        res = r.resolve(MISSING)
    assert res.exists is False
    assert [(f.code, f.severity.value, f.value) for f in res.findings] == [("doi.not-found", "error", MISSING)]
    assert registry.count("works") == 0


def test_malformed_doi_asks_nothing(registry):
    with make() as r:
        res = r.resolve("not a doi")
    assert res.exists is None and [f.code for f in res.findings] == ["doi.malformed"]
    assert registry.count() == 0


def test_503_then_success_resolves(registry):
    registry.script("handle", BMJ, Reply(503))
    with make() as r:
        res = r.resolve(BMJ)
    assert res.exists is True and res.findings == ()
    assert registry.count("handle", BMJ) == 2


def test_429_with_retry_after_resolves(registry):
    registry.script("works", BMJ, Reply(429, headers={"Retry-After": "0.1"}))
    with make() as r:
        res = r.resolve(BMJ)
    assert res.title and res.findings == ()
    assert registry.count("works", BMJ) == 2


def test_timeout_is_unknown_never_not_found(registry):
    registry.script("handle", BMJ, *[Reply(delay=0.5)] * 3)
    registry.script("works", BMJ, *[Reply(delay=0.5)] * 3)
    settings = ResolverSettings.from_env(timeout=0.1, max_retries=1, backoff_base=0.01)
    with Resolver(settings) as r:
        res = r.resolve(BMJ)
    assert res.exists is None
    assert [f.code for f in res.findings] == ["doi.unreachable"]
    assert res.findings[0].severity.value == "warning"
    assert "could not reach doi.org: no answer within 0.1 s, after 2 tries" in res.findings[0].message
    assert "could not reach Crossref" in res.findings[0].message


def test_handle_down_but_crossref_knows_it(registry):
    registry.script("handle", BMJ, *[Reply(503)] * 3)
    with make() as r:
        res = r.resolve(BMJ)
    assert res.exists is True and res.title
    assert [f.code for f in res.findings] == ["doi.unreachable"]


def test_malformed_json_is_a_bad_answer_and_not_cached(registry, tmp_path):
    registry.script("handle", BMJ, Reply(body='{"responseCode": 1,'))
    with make(tmp_path / "c.sqlite") as r:
        res = r.resolve(BMJ)
    assert [f.code for f in res.findings] == ["doi.bad-answer"]
    assert res.exists is True  # Crossref's record still proves it exists
    with make(tmp_path / "c.sqlite") as r:
        again = r.resolve(BMJ)
    assert again.findings == () and registry.count("handle", BMJ) == 2  # asked again, crossref not


def test_json_of_the_wrong_shape_is_a_bad_answer(registry, tmp_path):
    body = {"status": "ok", "message": {"title": ["T"], "issued": {"date-parts": [["twenty", 1]]}}}
    registry.script("works", BMJ, Reply(body=json.dumps(body)))
    with make(tmp_path / "c.sqlite") as r:
        res = r.resolve(BMJ)
    assert res.exists is True and res.title is None
    assert [f.code for f in res.findings] == ["doi.bad-answer"]
    assert "unexpected structure (ValueError" in res.findings[0].message
    with make(tmp_path / "c.sqlite") as r:
        assert r.resolve(BMJ).title  # the bad answer was not cached
    assert registry.count("works", BMJ) == 2


def test_second_run_is_answered_from_the_cache(registry, tmp_path):
    dois = [BMJ, LANCET, PREPRINT, MISSING]
    with make(tmp_path / "c.sqlite") as r:
        first = r.resolve_many(dois)
    asked = registry.count()
    assert asked == (2 + 2) + (2 + 2) + 4 + 1  # journal articles: + bioRxiv's reverse lookup at both servers
    with make(tmp_path / "c.sqlite") as r:
        second = r.resolve_many(dois)
    assert registry.count() == asked  # not one request more
    for doi in dois:
        assert second[doi].source == "cache"
        assert second[doi].model_dump(exclude={"source"}) == first[doi].model_dump(exclude={"source"})


def test_each_doi_is_asked_once_per_run(registry):
    with make() as r:
        r.resolve_many([BMJ, " doi:10.1136/BMJ.m606", f"https://doi.org/{BMJ}"])
        r.resolve(BMJ)
    assert registry.count("handle", BMJ) == 1


def test_cache_lifetimes_found_30_days_not_found_1_day(registry, tmp_path):
    clock = Clock()
    cache = tmp_path / "c.sqlite"
    with make(cache, clock=clock) as r:
        r.resolve_many([BMJ, MISSING])
    clock.now += timedelta(hours=23)
    with make(cache, clock=clock) as r:
        r.resolve_many([BMJ, MISSING])
    assert registry.count("handle", MISSING) == 1
    clock.now += timedelta(hours=2)
    with make(cache, clock=clock) as r:
        r.resolve_many([BMJ, MISSING])
    assert registry.count("handle", MISSING) == 2 and registry.count("handle", BMJ) == 1
    clock.now += timedelta(days=30)
    with make(cache, clock=clock) as r:
        res = r.resolve(BMJ)
    assert registry.count("handle", BMJ) == 2 and res.source == "network"
    assert res.checked_at == clock.now


def test_expired_answer_is_used_when_the_service_fails(registry, tmp_path):
    clock = Clock()
    with make(tmp_path / "c.sqlite", clock=clock) as r:
        r.resolve(BMJ)
    clock.now += timedelta(days=45)
    registry.script("handle", BMJ, *[Reply(503)] * 3)
    with make(tmp_path / "c.sqlite", clock=clock) as r:
        res = r.resolve(BMJ)
    assert res.exists is True and res.source == "network"  # Crossref was asked afresh
    assert res.checked_at == clock.now - timedelta(days=45)  # the oldest answer used
    (finding,) = res.findings
    assert finding.code == "doi.unreachable"
    assert finding.hint == "used the answer cached on 2026-03-01; run again later to refresh it"


def test_expired_not_found_is_not_reused_when_the_service_fails(registry, tmp_path):
    clock = Clock()
    with make(tmp_path / "c.sqlite", clock=clock) as r:
        assert r.resolve(MISSING).exists is False
    clock.now += timedelta(days=2)
    registry.script("handle", MISSING, *[Reply(503)] * 3)
    with make(tmp_path / "c.sqlite", clock=clock) as r:
        res = r.resolve(MISSING)
    assert res.exists is None
    assert [f.code for f in res.findings] == ["doi.unreachable"]


def test_refresh_asks_again(registry, tmp_path):
    with make(tmp_path / "c.sqlite") as r:
        r.resolve(BMJ)
    with make(tmp_path / "c.sqlite", refresh=True) as r:
        assert r.resolve(BMJ).source == "network"
    assert registry.count("handle", BMJ) == 2


def test_offline_uses_only_the_cache_and_names_what_it_could_not_check(registry, tmp_path):
    clock = Clock()
    with make(tmp_path / "c.sqlite", clock=clock) as r:
        r.resolve(BMJ)
    clock.now += timedelta(days=400)  # offline, old answers are still better than none
    with make(tmp_path / "c.sqlite", clock=clock, offline=True) as r:
        found = r.resolve_many([BMJ, LANCET])
    assert registry.count() == 4  # the first run's handle, works and reverse lookups at both servers
    assert found[BMJ].exists is True and found[BMJ].source == "cache"
    assert found[BMJ].checked_at == clock.now - timedelta(days=400)
    assert found[LANCET].exists is None and found[LANCET].source == "none"
    assert [f.code for f in found[LANCET].findings] == ["doi.not-cached"]
    assert "doi.org, Crossref" in found[LANCET].findings[0].message


def _settings(reg: FakeRegistry, **kwargs: object) -> ResolverSettings:
    values: dict[str, object] = {
        "doi_url": f"{reg.base}/doi",
        "crossref_url": f"{reg.base}/crossref",
        "biorxiv_url": f"{reg.base}/biorxiv",
        "workers": 16,
        "backoff_base": 0.01,
    } | kwargs
    return ResolverSettings(**values)  # type: ignore[arg-type]


def test_crossref_concurrency_is_one_in_the_public_pool():
    dois = [f"10.5555/paper.{i}" for i in range(30)]
    with FakeRegistry(delay=0.03) as reg, Resolver(_settings(reg, concurrency={**DEFAULT_CONCURRENCY, "doi": 12})) as r:
        found = r.resolve_many(dois)
    assert all(res.exists for res in found.values())
    assert reg.max_in_flight["doi"] > 5  # the pool could push harder than Crossref's cap
    assert reg.max_in_flight["crossref"] == 1
    assert all("mailto" not in q for q in reg.queries)


def test_crossref_polite_pool_with_a_mailto_in_the_query_and_the_user_agent():
    dois = [f"10.5555/paper.{i}" for i in range(30)]
    with (
        FakeRegistry(delay=0.03, concurrency_cap={"crossref": 3}) as reg,
        Resolver(_settings(reg, mailto="curator@example.org")) as r,
    ):
        assert all(res.exists for res in r.resolve_many(dois).values())
    assert reg.max_in_flight["crossref"] == 3 and reg.rejected["crossref"] == 0
    crossref = [q for q in reg.queries if q]
    assert len(crossref) == 30 and all(q == {"mailto": ["curator@example.org"]} for q in crossref)
    assert all("mailto:curator@example.org" in ua for ua in reg.user_agents)


def test_crossref_headers_size_the_pool():
    """Set to 3 at once, but Crossref's answers say public pool, x-concurrency-limit 1: the pool
    shrinks to 1 (and its 429s over that cap stop after the first burst)."""
    dois = [f"10.5555/paper.{i}" for i in range(20)]
    with (
        FakeRegistry(delay=0.03, crossref_limits=True, concurrency_cap={"crossref": 1}) as reg,
        Resolver(_settings(reg, concurrency={"doi": 12, "crossref": 3})) as r,
    ):
        found = r.resolve_many(dois)
        gate = r.client.gate("crossref")
    assert all(res.exists for res in found.values())
    assert (gate.pool, gate.concurrency) == ("public", 1)
    assert reg.rejected["crossref"] <= 2  # only requests sent before the first answer came back
    assert gate.spacing == pytest.approx(0.2)  # x-rate-limit-limit 5 per x-rate-limit-interval 1s


# --- for validate --online and add-contribution ---------------------------------------------


def test_aliases_and_same_paper_both_ways(registry):
    with make() as r:
        assert known_aliases(PREPRINT, r) == {PREPRINT, JOURNAL}
        assert known_aliases(JOURNAL, r) == {JOURNAL, PREPRINT}
        assert same_paper(PREPRINT, JOURNAL, r)
        assert same_paper(f"{JOURNAL}", f"doi:{PREPRINT}v2", r)
        assert same_paper(BMJ, BMJ.upper(), r)
        assert not same_paper(BMJ, LANCET, r)


def test_same_paper_findings_reject_a_preprint_whose_journal_version_is_in_the_sheet(registry):
    sheet = [DoiRef(JOURNAL, file="COVID-CT-MetaInfo.xlsx", row=40, column="DOI"), DoiRef(BMJ, row=41)]
    new = [DoiRef(PREPRINT, file="contribution.xlsx", row=2, column="DOI"), DoiRef(LANCET, row=3)]
    with make() as r:
        findings = same_paper_findings(new, sheet, r)
        reverse = same_paper_findings([JOURNAL], [DoiRef(PREPRINT, row=7)], r)
    assert len(findings) == 1
    f = findings[0]
    assert (f.code, f.severity.value, f.file, f.row, f.column) == (
        "doi.same-paper",
        "error",
        "contribution.xlsx",
        2,
        "DOI",
    )
    assert f.message.startswith(
        f"{PREPRINT} is the preprint of {JOURNAL} (row 40); one paper: 'Deep learning-based model"
    )
    assert [x.message.split(";")[0] for x in reverse] == [
        f"{JOURNAL} is the journal version of the preprint {PREPRINT} (row 7)"
    ]


def test_same_paper_findings_leave_identical_dois_to_the_caller(registry):
    with make() as r:
        assert same_paper_findings([BMJ], [BMJ], r) == []


def test_online_doi_findings_locate_each_problem_at_its_first_row(registry):
    registry.script("handle", LANCET, *[Reply(503)] * 3)
    registry.script("works", LANCET, *[Reply(503)] * 3)
    refs = [
        DoiRef(MISSING, file="s.xlsx", row=5, column="DOI"),
        DoiRef(MISSING, file="s.xlsx", row=6, column="DOI"),
        DoiRef(BMJ, file="s.xlsx", row=7, column="DOI"),
        DoiRef(LANCET, file="s.xlsx", row=8, column="DOI", derived=True),
        DoiRef(PREPRINT, file="s.xlsx", row=9, column="DOI"),
        DoiRef(JOURNAL, file="s.xlsx", row=12, column="DOI"),
    ]
    with make() as r:
        findings = online_doi_findings(refs, r)
    got = [(f.code, f.severity.value, f.row) for f in findings]
    assert got == [
        ("doi.not-found", "error", 5),
        ("doi.unreachable", "warning", 8),
        ("doi.same-paper", "warning", 12),
    ]
    assert findings[0].message == "DOI is not registered (doi.org: handle not found) (same DOI also in rows 6)"
    assert "(derived from the file name)" in findings[1].message
    assert registry.count("handle", MISSING) == 1


def test_aliases_of_an_unresolved_doi_are_itself(registry):
    with make(offline=True) as r:
        res = r.resolve(PREPRINT + "v3")
    assert aliases(res) == {PREPRINT}


# --- the sheet ------------------------------------------------------------------------------


def test_read_sheet_dois_real_sheet(repo_metadata):
    refs, findings = read_sheet_dois(repo_metadata)
    assert findings == []
    assert len(refs) == 349  # every row but the one with neither a DOI nor a preprint file name
    assert len({r.norm for r in refs}) == 58
    first = refs[0]
    assert (first.doi, first.row, first.derived) == ("10.1101/2020.01.24.919183", 2, True)
    lancet = [r for r in refs if r.norm == LANCET]
    assert lancet and not lancet[0].derived  # '10.1016/ S0140-6736(20)30154-9 ' cleaned


def test_read_sheet_dois_reports_malformed_cells(tmp_path):
    import pandas as pd

    pd.DataFrame({"File name": ["a.png", "b.png"], "DOI": ["10.1136/bmj.m606", "see paper"]}).to_excel(
        tmp_path / "COVID-CT-MetaInfo.xlsx", index=False
    )
    refs, findings = read_sheet_dois(tmp_path)
    assert [r.doi for r in refs] == [BMJ]
    assert [(f.code, f.row, f.value) for f in findings] == [("doi.malformed", 3, "see paper")]


def test_resolution_json_round_trip(registry):
    with make() as r:
        res = r.resolve(PREPRINT)
    data = json.loads(res.model_dump_json())
    assert data["published_doi"] == JOURNAL and data["source"] == "network"
    assert type(res).model_validate(data) == res


# --- whatever a service answers, it is a bool or a bad answer, never a traceback -------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "message",
                    "collection",
                    "title",
                    "issued",
                    "date-parts",
                    "relation",
                    "has-preprint",
                    "id",
                    "id-type",
                    "version",
                    "published",
                    "published_doi",
                    "responseCode",
                    "institution",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_READERS = [
    (judge_handle, json.loads),
    (judge_crossref, read_crossref),
    (judge_biorxiv, read_details),
    (judge_biorxiv, read_pubs),
]


@settings(max_examples=150, deadline=None)
@given(status=st.sampled_from([200, 404, 400, 301]), body=_json_values | st.text(max_size=30))
def test_any_answer_is_judged_or_rejected(status, body):
    text = body if isinstance(body, str) else json.dumps(body)
    for judge, reader in _READERS:
        try:
            if not judge(status, text):
                continue
            _check_readable(reader, text)
        except _BadAnswer:
            continue
        if reader is read_crossref:  # what passed must also make a valid Resolution
            fields = {k: v for k, v in read_crossref(text).items() if v not in (None, ())}
            Resolution(doi="10.1/x", exists=True, **fields)


def test_read_sheet_dois_missing_column(tmp_path):
    import pandas as pd

    from ctcurate.core.sheets import SheetError

    pd.DataFrame({"File name": ["a.png"], "Link": ["10.1136/bmj.m606"]}).to_excel(
        tmp_path / "COVID-CT-MetaInfo.xlsx", index=False
    )
    with pytest.raises(SheetError, match=r"COVID-CT-MetaInfo.xlsx \(sheet 'Sheet1'\): missing column\(s\) 'DOI'$"):
        read_sheet_dois(tmp_path)


def test_read_sheet_dois_reads_headers_as_validate_does(tmp_path):
    """One reader for every command: a header in another case or spacing is still the DOI column."""
    import pandas as pd

    pd.DataFrame({"file name": ["a.png"], "Doi ": [" 10.1136/BMJ.m606"]}).to_excel(tmp_path / "COVID-CT-MetaInfo.xlsx", index=False)
    refs, findings = read_sheet_dois(tmp_path)
    assert [(r.norm, r.row) for r in refs] == [("10.1136/bmj.m606", 2)] and findings == []


def test_online_sheet_findings_on_the_real_sheet(registry, repo_metadata):
    from ctcurate.doi.resolve import online_sheet_findings

    registry.not_found.add("10.1016/j.ijid.2020.02.037")
    with make() as r:
        findings = online_sheet_findings(repo_metadata, r)
    assert [(f.code, f.file, f.column, f.value) for f in findings] == [
        ("doi.not-found", "COVID-CT-MetaInfo.xlsx", "DOI", "10.1016/j.ijid.2020.02.037")
    ]
    assert findings[0].row == 347 and "(same DOI also in rows 348, 349, 350)" in findings[0].message
    assert registry.count("handle") == 58


def test_open_resolver_uses_the_default_cache(registry, tmp_path, monkeypatch):
    from ctcurate.doi.resolve import open_resolver

    monkeypatch.setenv("CTCURATE_CACHE", str(tmp_path / "default" / "cache.sqlite"))
    with open_resolver(mailto="lead@example.org") as r:
        assert r.resolve(BMJ).source == "network"
    assert (tmp_path / "default" / "cache.sqlite").is_file()
    with open_resolver(offline=True) as r:
        assert r.resolve(BMJ).source == "cache"
    assert registry.user_agents == {ResolverSettings.from_env(mailto="lead@example.org").user_agent}


def test_online_row_checker_gives_every_contribution_row_its_verdict(registry):
    from ctcurate.contribution.source import SheetRow
    from ctcurate.doi.resolve import online_row_checker

    rows = [
        SheetRow(2, {"File name": "a.png", "DOI": f"https://doi.org/{PREPRINT}"}),
        SheetRow(3, {"File name": "b.png", "DOI": MISSING}),
        SheetRow(4, {"File name": "c.png", "DOI": MISSING}),
        SheetRow(5, {"File name": "2020.02.25.20021568-p1-1.png", "DOI": None}),
        SheetRow(6, {"File name": "d.png", "DOI": "see the paper"}),
        SheetRow(7, {"File name": "e.png", "DOI": BMJ}),
    ]
    with make() as r:
        check = online_row_checker(r, {JOURNAL: "x.png", LANCET: "y.png"})
        findings = check(rows, "contribution.xlsx")
    got = sorted((f.row, f.code, f.severity.value) for f in findings)
    assert got == [
        (2, "doi.same-paper", "error"),
        (3, "doi.not-found", "error"),
        (4, "doi.not-found", "error"),
        (5, "doi.same-paper", "error"),
    ]
    same = next(f for f in findings if f.row == 2)
    assert same.file == "contribution.xlsx" and same.column == "DOI"
    assert same.message.startswith(f"{PREPRINT} is the preprint of {JOURNAL} (cited by x.png); one paper")
    assert registry.count("handle", PREPRINT) == 1 and registry.count("handle", MISSING) == 1


def _journal_of_dataset_preprint(registry: FakeRegistry, journal: str) -> str:
    """Script Crossref to say `journal` is the published version of the synthetic dataset's preprint."""
    linked = {
        "message": {
            "title": ["J"],
            "type": "journal-article",
            "relation": {"has-preprint": [{"id-type": "doi", "id": "10.1101/2020.02.10.20021580"}]},
        }
    }
    registry.script("works", journal, Reply(body=json.dumps(linked)))
    return journal


def test_online_row_checker_rejects_a_journal_version_of_a_dataset_preprint(registry, tmp_path):
    """End to end through add-contribution's library: the journal DOI of a preprint already in the
    dataset is rejected as the same paper (the seam the CLI's --online would use)."""
    from contribution_helpers import (
        make_synthetic_dataset,
        noise_png,
        write_contribution_sheet,
    )

    from ctcurate.contribution import run as contribute
    from ctcurate.contribution.dataset_state import read_state
    from ctcurate.contribution.intake import combine_checkers
    from ctcurate.doi.resolve import online_row_checker

    root = make_synthetic_dataset(tmp_path / "ds")
    journal = _journal_of_dataset_preprint(registry, "10.5555/journal.2020.1")
    contrib = tmp_path / "contrib"
    noise_png(contrib / "new-p1-1.png", 777)
    noise_png(contrib / "other-p2-1.png", 778)
    write_contribution_sheet(
        contrib / "contribution.xlsx",
        [
            {"File name": "new-p1-1.png", "Label": "COVID", "Patient ID": "P1", "DOI": journal, "Captions": "Fig. 1"},
            {"File name": "other-p2-1.png", "Label": "COVID", "Patient ID": "P2", "DOI": BMJ, "Captions": "Fig. 2"},
        ],
    )
    with make() as r:
        checker = online_row_checker(r, read_state(root, root / "metadata").dois)
        outcome = contribute.add_contribution(
            contrib,
            root,
            root / "metadata",
            check_rows=combine_checkers(contribute.default_row_checker(), checker),
            find_duplicates=contribute.default_duplicate_finder(tmp_path / "hash.sqlite"),
            dry_run=True,
        )
    verdict = {d.source: d for d in outcome.plan.decisions}
    assert verdict["new-p1-1.png"].accepted is False
    assert verdict["new-p1-1.png"].reasons == ("doi.same-paper",)
    assert verdict["other-p2-1.png"].accepted is True
    assert outcome.exit_code == 1


def test_cli_add_contribution_online_rejects_the_journal_version_of_a_dataset_preprint(registry, tmp_path, monkeypatch):
    """The same rule through `ctcurate add-contribution --online` (dry run, so nothing is written)."""
    from click.testing import CliRunner
    from contribution_helpers import (
        make_synthetic_dataset,
        noise_png,
        write_contribution_sheet,
    )

    from ctcurate.cli import main

    root = make_synthetic_dataset(tmp_path / "ds")
    journal = _journal_of_dataset_preprint(registry, "10.5555/journal.2020.2")
    contrib = tmp_path / "contrib"
    noise_png(contrib / "new-p1-1.png", 779)
    write_contribution_sheet(
        contrib / "contribution.xlsx",
        [{"File name": "new-p1-1.png", "Label": "COVID", "Patient ID": "P1", "DOI": journal, "Captions": "Fig. 1"}],
    )
    args = ["add-contribution", str(contrib), "--data", str(root), "--metadata", str(root / "metadata"),
            "--cache", str(tmp_path / "hash.sqlite"), "--dry-run"]
    offline = CliRunner().invoke(main, args)
    assert offline.exit_code == 0, offline.output  # without --online the registries are not asked
    assert registry.count("works", journal) == 0
    online = CliRunner().invoke(main, [*args, "--online"])
    assert online.exit_code == 1, online.output
    assert "rejected  new-p1-1.png: doi.same-paper" in online.output
    assert registry.count("works", journal) >= 1


# --- the registries as their documentation describes them (issue 11) ---------------------------

NEW_PREPRINT = "10.64898/2025.12.10.700001"
SYNTHETIC_JOURNAL = "10.5555/synthetic.2026.001"


def test_biorxiv_error_envelope_is_a_bad_answer_not_absence(registry, tmp_path):
    from fake_registry import ERROR_ENVELOPE

    registry.script("details", PREPRINT, Reply(body=ERROR_ENVELOPE))
    with make(tmp_path / "c.sqlite") as r:
        res = r.resolve(PREPRINT)
    assert [f.code for f in res.findings] == ["doi.bad-answer"]
    assert "the API reported 'error: the service is temporarily unavailable'" in res.findings[0].message
    assert res.exists is True and res.preprint_server is None  # doi.org and Crossref know it
    with make(tmp_path / "c.sqlite") as r:
        again = r.resolve(PREPRINT)
    assert again.preprint_server == "medrxiv"  # nothing was cached from the error: asked again
    assert registry.count("details", PREPRINT) == 2


def test_no_posts_found_is_still_absence():
    assert judge_biorxiv(200, json.dumps({"messages": [{"status": "no posts found"}], "collection": []})) is False
    with pytest.raises(_BadAnswer):
        judge_biorxiv(200, json.dumps({"messages": [{"status": "Error: unknown server"}], "collection": []}))


def test_new_prefix_preprint_and_its_journal_through_preprint_doi(registry):
    with make() as r:
        res = r.resolve(NEW_PREPRINT)
    assert (res.exists, res.preprint_server) == (True, "biorxiv")
    assert (res.published_doi, res.published_container) == (SYNTHETIC_JOURNAL, "Journal of Synthetic Results")


def test_read_pubs_picks_the_record_of_its_preprint():
    body = json.dumps(
        {
            "messages": [{"status": "ok"}],
            "collection": [
                {"preprint_doi": "10.1101/2020.01.01.111111", "published_doi": "10.1/other"},
                {"preprint_doi": "10.1101/2020.02.02.222222v2", "published_doi": "10.1/mine", "published_journal": "J"},
            ],
        }
    )
    assert read_pubs(body, "10.1101/2020.02.02.222222") == {"published_doi": "10.1/mine", "published_container": "J"}


def test_journal_article_finds_its_preprint_in_reverse(registry):
    with make() as r:
        res = r.resolve(SYNTHETIC_JOURNAL)
        assert res.preprint_dois == (NEW_PREPRINT,)
        assert same_paper(SYNTHETIC_JOURNAL, NEW_PREPRINT, r)
    assert registry.count("pubs", SYNTHETIC_JOURNAL) == 2  # medRxiv first, then bioRxiv


def test_old_preprint_id_under_the_new_prefix_is_not_found(registry):
    with make() as r:
        res = r.resolve("10.64898/2020.02.25.20021568")
    assert res.exists is False and [f.code for f in res.findings] == ["doi.not-found"]


def test_derived_doi_near_the_change_over_asks_which_exists(registry):
    from ctcurate.doi.resolve import settle_derived

    registry.minted_new.add("2025.11.28.654321")  # submitted before, posted after the change
    pre = preprint_from_filename("2025.11.28.654321-p1-1.png")
    refs = [DoiRef(doi=pre.doi, row=2, derived=True, alternatives=pre.alternatives)]
    with make() as r:
        findings = online_doi_findings(refs, r)
        settled = settle_derived(refs, r)
    assert findings == []
    assert [x.doi for x in settled] == ["10.64898/2025.11.28.654321"]


def test_derived_doi_of_a_new_preprint_is_not_a_false_not_found(registry, tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.append(["File name", "DOI"])
    wb.active.append(["2026.01.12.12345678-p3-9.png", None])
    wb.save(tmp_path / "COVID-CT-MetaInfo.xlsx")
    refs, _ = read_sheet_dois(tmp_path)
    assert [r.doi for r in refs] == ["10.64898/2026.01.12.12345678"]
    with make() as r:
        assert online_doi_findings(refs, r) == []


# --- damaged cache rows, hangs (issue 12) -------------------------------------------------------


def _damage(path: Path, sql: str) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE doi_answers SET checked_at = 'yesterday' WHERE key = 'handle'",
        "UPDATE doi_answers SET body = 'not json {' WHERE key = 'crossref'",
        "UPDATE doi_answers SET found = 7 WHERE key = 'crossref'",
    ],
)
def test_damaged_cache_row_is_dropped_and_asked_again(registry, tmp_path, sql):
    cache = tmp_path / "c.sqlite"
    with make(cache) as r:
        r.resolve(BMJ)
    _damage(cache, sql)
    asked = registry.count()
    with make(cache, offline=True) as r:
        offline = r.resolve(BMJ)
    assert [f.code for f in offline.findings] == ["doi.cache-damaged", "doi.not-cached"]
    assert "dropped and not checked (offline)" in offline.findings[0].message
    with make(cache) as r:
        online = r.resolve(BMJ)
    assert online.exists is True and online.findings == ()  # dropped once, warned once
    assert registry.count() == asked + 1
    with make(cache, offline=True) as r:
        assert r.resolve(BMJ).findings == ()


def test_a_dripping_body_ends_at_the_request_deadline(registry):
    registry.script("handle", BMJ, *[Reply(drip=0.05)] * 3)
    settings = ResolverSettings.from_env(timeout=0.4, max_retries=0, backoff_base=0.01)
    started = datetime.now(UTC)
    with Resolver(settings) as r:
        res = r.resolve(BMJ)
    assert (datetime.now(UTC) - started).total_seconds() < 5
    assert [f.code for f in res.findings] == ["doi.unreachable"]
    assert "the answer was still arriving after 0.4 s" in res.findings[0].message
    assert res.exists is True  # Crossref still answered


def test_a_day_long_rate_limit_interval_is_unreachable_not_a_hang():
    with (
        FakeRegistry(headers={"x-rate-limit-limit": "1", "x-rate-limit-interval": "86400s"}) as reg,
        Resolver(_settings(reg, max_retries=0)) as r,
    ):
        first = r.resolve("10.5555/a")  # every service's first answer says: one request a day
        second = r.resolve("10.5555/b")
    assert first.exists is True
    assert second.exists is None and [f.code for f in second.findings] == ["doi.unreachable"]
    assert "rate-limited: the service's pacing asks for a wait of 86400 s (more than 120 s)" in (
        second.findings[0].message
    )
