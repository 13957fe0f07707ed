"""`ctcurate doi normalize` and `ctcurate doi resolve`, against a local registry stand-in."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_registry import FakeRegistry, Reply

from ctcurate.cli import main
from ctcurate.doi.resolve import ResolverSettings

BMJ = "10.1136/bmj.m606"
PREPRINT = "10.1101/2020.02.25.20021568"
MISSING = "10.1136/bmj.m9999"


_from_env = ResolverSettings.from_env.__func__  # type: ignore[attr-defined]


def _fast_retries(cls: type[ResolverSettings], environ: object = None, **overrides: object) -> ResolverSettings:
    """The CLI's settings, with retries 50 times quicker so that failure tests stay fast."""
    return _from_env(cls, environ, **{"backoff_base": 0.01, **overrides})


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with FakeRegistry() as reg:
        reg.not_found.add(MISSING)
        for name, url in reg.urls.items():
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("CTCURATE_CACHE", str(tmp_path / "cache.sqlite"))
        monkeypatch.setattr(ResolverSettings, "from_env", classmethod(_fast_retries))
        yield reg


def run(*args: str):
    return CliRunner().invoke(main, ["doi", *args])


# --- normalize ------------------------------------------------------------------------------


def test_normalize_prints_one_canonical_doi_per_argument():
    result = run("normalize", " doi:10.1136/BMJ.m606 ", "https://doi.org/10.1016/%20S0140-6736(20)30154-9")
    assert result.exit_code == 0
    assert result.output == "10.1136/bmj.m606\n10.1016/s0140-6736(20)30154-9\n"


def test_normalize_reports_each_failure_in_place_and_exits_1():
    result = run("normalize", "10.1136/bmj.m606", "see the paper", "  ")
    assert result.exit_code == 1
    assert result.output == (
        "10.1136/bmj.m606\nerror: 'see the paper' is not a DOI (expected 10.NNNN/suffix)\nerror: empty\n"
    )


def test_normalize_dash_reads_standard_input():
    result = CliRunner().invoke(main, ["doi", "normalize", "-"], input=b" doi:10.1136/BMJ.m606\n\xff10.1/x\n")
    assert result.exit_code == 1
    assert result.output == "10.1136/bmj.m606\nerror: '\\udcff10.1/x' is not a DOI: it is not valid UTF-8\n"


def test_normalize_refuses_control_and_bidi_characters():
    result = run("normalize", "10.1/x\x01", "10.1/x\u202e")
    assert result.exit_code == 1
    assert result.output == (
        "error: '10.1/x\\x01' is not a DOI: it holds the control character U+0001\n"
        "error: '10.1/x\\u202e' is not a DOI: it holds the invisible format character U+202E "
        "(RIGHT-TO-LEFT OVERRIDE)\n"
    )


def test_normalize_keeps_a_literal_percent_and_drops_url_parts():
    result = run("normalize", "https://doi.org/10.1000/a%2525?x=1#top", "10.1136/bmj.m606.")
    assert (result.exit_code, result.output) == (0, "10.1000/a%25\n10.1136/bmj.m606\n")


def test_normalize_needs_an_argument():
    assert run("normalize").exit_code == 2


# --- resolve --------------------------------------------------------------------------------


def test_resolve_text(registry):
    result = run("resolve", BMJ, PREPRINT, MISSING)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == (
        '10.1136/bmj.m606: exists: "Clinical findings in a group of patients infected with the 2019 novel '
        'coronavirus (SARS-Cov-2) outside of Wuhan, China: retrospective case series" '
        "(BMJ, 2020-02-19, journal-article) [network]"
    )
    assert lines[1] == (
        '10.1101/2020.02.25.20021568: exists: "Deep learning-based model for detecting 2019 novel coronavirus '
        'pneumonia on high-resolution computed tomography: a prospective study" (medRxiv, 2020-02-26, '
        "posted-content; medrxiv preprint, 2 versions, published as 10.1038/s41598-020-76282-0 in Scientific Reports) "
        "[network]"
    )
    assert lines[2] == "10.1136/bmj.m9999: not found [network]"
    assert "error: -: doi.not-found: DOI is not registered (doi.org: handle not found) ['10.1136/bmj.m9999']" in lines
    assert lines[-1] == "3 DOI(s): 2 exist, 1 not found, 0 unknown"


def test_resolve_all_found_exits_0_and_second_run_is_cached(registry):
    first = run("resolve", BMJ)
    assert first.exit_code == 0 and first.output.endswith("1 DOI(s): 1 exist, 0 not found, 0 unknown\n")
    asked = registry.count()
    second = run("resolve", BMJ)
    assert second.exit_code == 0 and "[cache]" in second.output
    assert registry.count() == asked


def test_resolve_json(registry):
    result = run("resolve", "--format", "json", BMJ, MISSING)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [(r["doi"], r["exists"]) for r in data["resolutions"]] == [(BMJ, True), (MISSING, False)]
    assert data["resolutions"][0]["container"] == "BMJ"
    assert [f["code"] for f in data["findings"]] == ["doi.not-found"]
    assert data["summary"] | {"by_code": None} == {
        "errors": 1,
        "warnings": 0,
        "by_code": None,
        "dois": 2,
        "exist": 1,
        "not_found": 1,
        "unknown": 0,
    }


def test_resolve_csv(registry):
    result = run("resolve", "--format", "csv", PREPRINT, "junk")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["doi"] for r in rows] == [PREPRINT, "junk"]
    assert rows[0]["exists"] == "yes" and rows[0]["published_doi"] == "10.1038/s41598-020-76282-0"
    assert rows[0]["preprint_server"] == "medrxiv" and rows[0]["versions"] == "2"
    assert rows[1]["exists"] == "unknown" and rows[1]["findings"] == "doi.malformed"


def test_resolve_network_failure_is_a_warning_and_exit_1(registry, monkeypatch):
    monkeypatch.setenv("CTCURATE_DOI_URL", "http://127.0.0.1:9")
    registry.script("works", BMJ, *[Reply(503)] * 10)
    result = run("resolve", BMJ)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{BMJ}: unknown [none]" in result.output
    assert "warning: -: doi.unreachable: could not reach doi.org: connection failed" in result.output
    assert "not found" not in result.output.split("\n")[0]


def test_resolve_timeout_ends_the_run_on_a_dripping_registry(registry, monkeypatch):
    """A handle answer dripped a byte every 0.3 s would take 15 s; the run's budget cuts it at 1 s
    and the DOIs not yet asked are reported unreachable, not asked (one DOI at a time here)."""
    monkeypatch.setattr(ResolverSettings, "from_env", classmethod(lambda cls, env=None, **o: _fast_retries(cls, env, workers=1, **o)))
    registry.script("handle", BMJ, Reply(drip=0.3))
    started = time.monotonic()
    result = run("resolve", "--format", "json", "--timeout", "1", BMJ, PREPRINT, MISSING)
    assert time.monotonic() - started < 10  # a guard against a hang, not a timing target
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [(r["doi"], r["exists"]) for r in data["resolutions"]] == [(BMJ, None), (PREPRINT, None), (MISSING, None)]
    assert [(f["code"], f["value"], f["message"]) for f in data["findings"]] == [
        ("doi.unreachable", BMJ, "could not reach doi.org: the answer was still arriving: the run's 1 s budget is spent"),
        ("doi.unreachable", PREPRINT, "could not reach doi.org: not asked: the run's 1 s budget is spent"),
        ("doi.unreachable", MISSING, "could not reach doi.org: not asked: the run's 1 s budget is spent"),
    ]
    assert "run again to go on" in data["findings"][1]["hint"]
    assert registry.count() == 1  # only the dripping request was made


def test_resolve_timeout_must_be_positive(registry):
    result = run("resolve", "--timeout", "0", BMJ)
    assert result.exit_code == 2 and "--timeout" in result.output
    assert registry.count() == 0


def test_resolve_help_names_the_default_timeout():
    from ctcurate.doi.resolve import DEFAULT_RUN_BUDGET

    assert f"(default {DEFAULT_RUN_BUDGET:g})" in " ".join(run("resolve", "--help").output.split())


def test_resolve_offline_says_what_it_could_not_check(registry):
    assert run("resolve", BMJ).exit_code == 0
    asked = registry.count()
    result = run("resolve", "--offline", BMJ, PREPRINT)
    assert registry.count() == asked
    assert result.exit_code == 1
    assert f"{BMJ}: exists" in result.output and "[cache]" in result.output
    assert f"{PREPRINT}: unknown [none]" in result.output
    assert (
        f"warning: -: doi.not-cached: offline and no cached answer from doi.org, Crossref, "
        f"the bioRxiv/medRxiv API: not checked ['{PREPRINT}']"
    ) in result.output


@pytest.mark.parametrize(
    "damage",
    ["UPDATE doi_answers SET checked_at = 'last Tuesday'", "UPDATE doi_answers SET body = 'not json {' WHERE found = 1"],
)
def test_resolve_offline_on_a_damaged_cache_warns_instead_of_dying(registry, tmp_path, damage):
    import sqlite3

    assert run("resolve", BMJ).exit_code == 0
    with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
        conn.execute(damage)
    result = run("resolve", "--offline", BMJ)
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert f"{BMJ}: unknown [none]" in result.output
    assert "warning: -: doi.cache-damaged: damaged cached answer(s) (" in result.output
    assert "dropped and not checked (offline)" in result.output
    again = run("resolve", BMJ)  # online: asked again and cached afresh
    assert again.exit_code == 0 and "doi.cache-damaged" not in again.output


def test_resolve_refresh_asks_again(registry):
    run("resolve", BMJ)
    run("resolve", "--refresh", BMJ)
    assert registry.count("handle", BMJ) == 2


def test_resolve_mailto_in_user_agent(registry, monkeypatch):
    monkeypatch.setenv("CTCURATE_MAILTO", "env@example.org")
    run("resolve", BMJ)
    run("resolve", "--refresh", "--mailto", "cli@example.org", BMJ)
    agents = registry.user_agents
    assert any(a.endswith("; mailto:env@example.org)") for a in agents)
    assert any(a.endswith("; mailto:cli@example.org)") for a in agents)


def test_resolve_explicit_cache_file(registry, tmp_path):
    cache = tmp_path / "elsewhere" / "answers.sqlite"
    assert run("resolve", "--cache", str(cache), BMJ).exit_code == 0
    assert cache.is_file()


def test_resolve_usage_errors(registry, tmp_path):
    assert run("resolve").exit_code == 2
    assert run("resolve", BMJ, "--metadata", str(tmp_path)).exit_code == 2
    both = run("resolve", "--offline", "--refresh", BMJ)
    assert both.exit_code == 2 and "--offline and --refresh contradict each other" in both.output
    assert registry.count() == 0


def test_resolve_missing_sheet_is_one_line_exit_2(registry, tmp_path):
    result = run("resolve", "--metadata", str(tmp_path))
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path / 'COVID-CT-MetaInfo.xlsx'}: no such file\n"
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("content", [b"not a workbook", b"PK\x03\x04 a broken zip"])
def test_resolve_unreadable_sheet_is_one_line_exit_2(registry, tmp_path, content):
    (tmp_path / "COVID-CT-MetaInfo.xlsx").write_bytes(content)
    result = run("resolve", "--metadata", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {tmp_path / 'COVID-CT-MetaInfo.xlsx'}: not a readable .xlsx workbook (")
    assert len(result.output.splitlines()) == 1


def test_resolve_damaged_cache_file_is_moved_aside_and_rebuilt(registry, tmp_path):
    """A cache is only a cache: a file that is not SQLite is kept aside, a new one answers."""
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = run("resolve", "--cache", str(bad), BMJ)
    assert result.exit_code == 0, result.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("cache.sqlite.damaged")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"this is not sqlite" * 100


def test_resolve_metadata_real_sheet_asks_each_distinct_doi_once(registry, repo_metadata):
    result = run("resolve", "--metadata", str(repo_metadata))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "58 DOI(s): 58 exist, 0 not found, 0 unknown"
    handles = {doi for kind, doi in registry.hits if kind == "handle"}
    assert len(handles) == 58
    assert "10.1016/s0140-6736(20)30154-9" in handles  # written '10.1016/ S0140-6736(20)30154-9 '
    assert "10.1101/2020.01.24.919183" in handles  # empty cell, derived from the file name
    assert max(n for (kind, _), n in registry.hits.items() if kind != "pubs") == 1  # no DOI asked twice
    assert registry.count("works") == 58
    assert registry.count("details") == 44  # every preprint, once, at its own server
    # only the recorded preprint says it was published; each of the 14 journal articles without a
    # Crossref `has-preprint` is looked up in reverse, once at each server
    assert registry.count("pubs") == 1 + 14 * 2
    again = run("resolve", "--metadata", str(repo_metadata), "--offline")
    assert again.exit_code == 0 and registry.count() == 58 * 2 + 44 + 1 + 14 * 2


def test_resolve_metadata_reports_rows(registry, tmp_path):
    import pandas as pd

    pd.DataFrame(
        {
            "File name": ["a.png", "b.png", "c.png", "2020.02.25.20021568-p24-111%2.png"],
            "DOI": [MISSING, MISSING, "not a doi", None],
        }
    ).to_excel(tmp_path / "COVID-CT-MetaInfo.xlsx", index=False)
    result = run("resolve", "--metadata", str(tmp_path))
    assert result.exit_code == 1
    assert (
        "error: COVID-CT-MetaInfo.xlsx, row 4, column 'DOI': doi.malformed: not a DOI (expected 10.NNNN/suffix) "
        "['not a doi']"
    ) in result.output
    assert (
        "error: COVID-CT-MetaInfo.xlsx, row 2, column 'DOI': doi.not-found: DOI is not registered "
        "(doi.org: handle not found) (same DOI also in rows 3) ['10.1136/bmj.m9999']"
    ) in result.output
    assert result.output.splitlines()[-1] == "2 DOI(s): 1 exist, 1 not found, 0 unknown"


def test_resolve_versions_of_one_preprint_are_one_doi(registry):
    result = run("resolve", f"{PREPRINT}v1", f"{PREPRINT}v2", PREPRINT.upper())
    assert result.exit_code == 0
    assert result.output.splitlines()[0].startswith(f"{PREPRINT}: exists")
    assert result.output.splitlines()[-1] == "1 DOI(s): 1 exist, 0 not found, 0 unknown"
    assert registry.count("handle") == 1
