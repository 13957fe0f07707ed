"""`ctcurate validate --online`: the sheet's DOIs asked of a local stand-in for the registries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_registry import FakeRegistry, Reply
from sheetfactory import covid_row, write_xlsx

from ctcurate.cli import main
from ctcurate.doi.resolve import Resolver, ResolverSettings
from ctcurate.core.codes import descriptions
from ctcurate.validation.checks import validate

PREPRINT = "10.1101/2020.02.25.20021568"
JOURNAL = "10.1038/s41598-020-76282-0"
MISSING = "10.1136/bmj.m9999"


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    with FakeRegistry() as reg:
        reg.not_found.add(MISSING)
        for name, url in reg.urls.items():
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("CTCURATE_CACHE", str(tmp_path / "cache.sqlite"))
        yield reg


@pytest.fixture()
def small_sheet(tmp_path: Path) -> Path:
    folder = tmp_path / "metadata"
    folder.mkdir()
    write_xlsx(
        folder / "COVID-CT-MetaInfo.xlsx",
        [
            covid_row("a.png", "Patient 1", doi="10.1136/bmj.m606"),
            covid_row("b.png", "Patient 2", doi=MISSING),
            covid_row("c.png", "Patient 2", doi=MISSING),
            covid_row("2020.02.25.20021568-p24-111%2.png", "Patient 3"),  # DOI from the file name
            covid_row("d.png", "Patient 4", doi=JOURNAL),
        ],
    )
    return folder


def test_validate_with_a_resolver_adds_the_online_findings(registry, small_sheet):
    settings = ResolverSettings.from_env(backoff_base=0.01)
    with Resolver(settings) as resolver:
        result = validate(small_sheet, resolver=resolver)
    online = [(f.code, f.row) for f in result.findings if f.code in ("doi.not-found", "doi.same-paper")]
    assert online == [("doi.not-found", 3), ("doi.same-paper", 6)]
    same = next(f for f in result.findings if f.code == "doi.same-paper")
    assert same.message.startswith(f"{JOURNAL} is the journal version of the preprint {PREPRINT} (row 5)")
    assert set(result.dois) == {"10.1136/bmj.m606", MISSING, PREPRINT, JOURNAL}
    assert result.summary["dois_online"] == {"dois": 4, "exist": 3, "not_found": 1, "unknown": 0}
    assert registry.count("handle") == 4  # each distinct DOI once, the derived one included


def test_validate_without_a_resolver_asks_nothing(registry, small_sheet):
    result = validate(small_sheet)
    assert registry.count() == 0 and result.dois == {} and "dois_online" not in result.summary


def test_online_codes_are_registered():
    for code in ("doi.not-found", "doi.same-paper", "doi.unreachable", "doi.bad-answer", "doi.not-cached"):
        assert code in descriptions("validate")


def test_cli_validate_online_text_lists_each_doi_with_its_title(registry, small_sheet):
    result = CliRunner().invoke(main, ["validate", "--metadata", str(small_sheet), "--online"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    at = lines.index("error: doi.not-found (1)")
    assert lines[at + 2: at + 4] == [
        "  COVID-CT-MetaInfo.xlsx:",
        "    row 3, 'DOI': DOI is not registered (doi.org: handle not found) (same DOI also in rows 4)",
    ]
    assert "10.1136/bmj.m9999" in lines[at + 4]
    tail = result.output.split("\nDOIs:\n", 1)[1].splitlines()
    assert len(tail) == 4
    assert tail[0].startswith('  10.1136/bmj.m606: exists: "Clinical findings in a group of patients')
    assert "  10.1136/bmj.m9999: not found [network]" in tail


def test_cli_validate_online_json_and_offline(registry, small_sheet):
    first = CliRunner().invoke(main, ["validate", "--metadata", str(small_sheet), "--online", "--format", "json"])
    data = json.loads(first.stdout)
    assert set(data) == {"findings", "summary"}
    assert [d["doi"] for d in data["summary"]["dois_online"]["papers"]][:2] == ["10.1136/bmj.m606", MISSING]
    assert data["summary"]["dois_online"]["not_found"] == 1
    asked = registry.count()
    again = CliRunner().invoke(main, ["validate", "--metadata", str(small_sheet), "--online", "--offline"])
    assert registry.count() == asked
    assert "doi.not-found" in again.output and "[cache]" in again.output


def test_cli_validate_online_network_down_is_warnings_not_errors(registry, small_sheet, monkeypatch):
    for service in ("handle", "works"):
        for doi in ("10.1136/bmj.m606", MISSING, PREPRINT, JOURNAL):
            registry.script(service, doi, *[Reply(503)] * 20)
    for doi in (PREPRINT,):
        registry.script("details", doi, *[Reply(503)] * 20)
    monkeypatch.setattr(ResolverSettings, "from_env", classmethod(_fast))
    result = CliRunner().invoke(main, ["validate", "--metadata", str(small_sheet), "--online"])
    assert "doi.not-found" not in result.output
    assert "doi.unreachable" in result.output
    assert result.exit_code == 0, result.output  # nothing is wrong that was checked


_from_env = ResolverSettings.from_env.__func__  # type: ignore[attr-defined]


def _fast(cls: type[ResolverSettings], environ: object = None, **overrides: object) -> ResolverSettings:
    return _from_env(cls, environ, **{"backoff_base": 0.01, **overrides})


def test_cli_validate_offline_needs_online(registry, small_sheet):
    result = CliRunner().invoke(main, ["validate", "--metadata", str(small_sheet), "--offline"])
    assert result.exit_code == 2 and "--offline and --mailto go with --online" in result.output
