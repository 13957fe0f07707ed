"""DOI normalization: pinned examples from the real sheet and properties it must keep on any text."""

from __future__ import annotations

import string
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctcurate.doi import normalize as doi


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.1016/ S0140-6736(20)30154-9 ", "10.1016/s0140-6736(20)30154-9"),
        ("doi:10.1136/bmj.m606", "10.1136/bmj.m606"),
        ("https://doi.org/10.1101/2020.02.25.20021568", "10.1101/2020.02.25.20021568"),
        ("http://dx.doi.org/10.1101%2F2020.02.25.20021568", "10.1101/2020.02.25.20021568"),
        ("\u00a010.3348/kjr.2020.0112\u200b", "10.3348/kjr.2020.0112"),
        ("10.1007/s11684\u2013020-0757-x", "10.1007/s11684-020-0757-x"),
    ],
)
def test_normalize_examples(raw, expected):
    assert doi.normalize(raw) == expected


def test_parse_reports_every_repair_of_the_real_inner_space_doi():
    parsed = doi.parse("10.1016/ S0140-6736(20)30154-9 ")
    assert parsed.repairs == ("doi.inner-whitespace", "doi.whitespace")
    assert parsed.valid


def test_lookalike_and_zero_width_are_reported():
    assert "doi.lookalike" in doi.parse("10.1007/s11684\u2013020").repairs
    assert "doi.zero-width" in doi.parse("10.1007/\u200bs11684").repairs


@pytest.mark.parametrize(
    ("name", "expected", "server"),
    [
        ("2020.02.10.20021584-p6-52%0.png", "10.1101/2020.02.10.20021584", "medrxiv"),
        ("2020.01.24.919183-p27-132.png", "10.1101/2020.01.24.919183", "biorxiv"),
    ],
)
def test_preprint_from_filename(name, expected, server):
    pid = doi.preprint_from_filename(name)
    assert pid is not None and pid.doi == expected and pid.server == server


def test_preprint_needs_a_real_date_and_a_preprint_shape():
    assert doi.preprint_from_filename("2020.02.30.20021584-p6.png") is None
    assert doi.preprint_from_filename("2020.02.10.2002158-p6.png") is None  # 7 digits
    assert doi.preprint_from_filename("bmj.m606.full-p4-22%0.png") is None


def test_preprint_from_doi_forms():
    assert doi.preprint_from_doi("10.1101/2020.03.04.20031047v2").posted == date(2020, 3, 4)
    assert doi.preprint_from_doi("10.1101/123456").server == "biorxiv"
    assert doi.preprint_from_doi("10.64898/2025.12.01.123456") is not None
    assert doi.preprint_from_doi("10.1136/bmj.m606") is None


def test_check_doi_codes():
    def codes(raw, name=None):
        return sorted(f.code for f in doi.check_doi(raw, name))

    assert codes(None, "2020.02.10.20021584-p6-52%0.png") == ["doi.derivable"]
    assert codes("10.1101/2020.02.11.20021493", "2020.02.10.20021584-p6-52%0.png") == ["doi.mismatch"]
    assert codes("10.1101/2020.02.10.20021584v3", "2020.02.10.20021584-p6-52%0.png") == []
    assert codes("not a doi") == ["doi.inner-whitespace", "doi.malformed"]
    assert codes("10.1016/ S0140-6736(20)30154-9 ") == ["doi.inner-whitespace", "doi.whitespace"]
    assert codes("", "kjr-21-e24-p2-8.png") == []


doi_like = st.builds(
    lambda reg, suffix, pre, post: f"{pre}10.{reg}/{suffix}{post}",
    st.integers(1000, 999999999).map(str),
    st.text(min_size=1, max_size=30),
    st.sampled_from(["", " ", "doi:", "https://doi.org/", "http://dx.doi.org/", "\u00a0", "\u200b", "DOI: "]),
    st.sampled_from(["", " ", "\n", "\u200b", "%20"]),
)
any_text = st.one_of(st.text(max_size=80), doi_like)


@settings(max_examples=300, deadline=None)
@given(any_text)
@example("%2525252541")
@example("doi:doi: https://doi.org/10.1/x")
@example("\uff44\uff4f\uff49:10.1/x")  # full-width "doi:" folds to ASCII only after NFKC
def test_normalize_is_idempotent_and_never_raises(raw):
    once = doi.normalize(raw)
    assert doi.normalize(once) == once
    assert once == once.strip() and " " not in once


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), any_text), st.one_of(st.none(), st.text(max_size=40))
)
def test_check_doi_never_raises(raw, name):
    for f in doi.check_doi(raw, name):
        assert f.code.startswith("doi.")


@settings(max_examples=200, deadline=None)
@given(any_text, any_text)
def test_same_doi_is_symmetric(a, b):
    assert doi.same_doi(a, b) == doi.same_doi(b, a)


@settings(max_examples=200, deadline=None)
@given(doi_like)
def test_same_doi_ignores_prefix_ascii_case_and_space(raw):
    shouted = doi.normalize(raw).translate(str.maketrans(string.ascii_lowercase, string.ascii_uppercase))
    assert doi.same_doi(raw, " doi: " + shouted) or not doi.normalize(raw)


def test_case_folding_is_ascii_only():
    # DOI Handbook: case-insensitive for ASCII only; 'ß' and 'SS' are different suffixes.
    assert doi.normalize("10.1000/ABC") == "10.1000/abc"
    assert not doi.same_doi("10.1000/ß", "10.1000/SS")
    assert doi.normalize("10.1000/Ä") == "10.1000/Ä"


# --- issue 11: URL parts, punctuation, decoding, preprint URLs and IDs, look-alike letters ------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://doi.org/10.1136/bmj.m606?utm_source=x#abstract", "10.1136/bmj.m606"),
        (["see", "10.1136/bmj.m606."][-1], "10.1136/bmj.m606"),
        ("10.1136/bmj.m606,", "10.1136/bmj.m606"),
        ("10.1136/bmj.m606;", "10.1136/bmj.m606"),
        ("10.1136/bmj.m606)", "10.1136/bmj.m606"),
        ("10.1016/s0140-6736(20)30154-9", "10.1016/s0140-6736(20)30154-9"),  # a balanced ')' stays
        ("https://doi.org/10.1000/a%2525", "10.1000/a%25"),  # decoded once: the DOI holds '%25'
        ("https://www.medrxiv.org/content/10.1101/2020.02.25.20021568v1.full.pdf", "10.1101/2020.02.25.20021568"),
        ("https://www.biorxiv.org/content/10.1101/2020.01.24.919183v2", "10.1101/2020.01.24.919183"),
        ("10.1016/\u0458.ijid.2020.03.001", "10.1016/j.ijid.2020.03.001"),  # Cyrillic je
        ("10.1016/j.\u0456jid", "10.1016/j.ijid"),  # Cyrillic i
    ],
)
def test_normalize_edge_cases_of_issue_11(raw, expected):
    parsed = doi.parse(raw)
    assert parsed.doi == expected and parsed.valid


def test_cyrillic_letter_is_a_lookalike_repair():
    assert doi.parse("10.1016/\u0458.ijid").repairs == ("doi.lookalike",)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("10.1136/bmj\x01.m606", "holds the control character U+0001"),
        ("10.1136/bmj.m606\u202e", "holds the invisible format character U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("10.1136/bmj.m606\udcff", "is not valid UTF-8"),
    ],
)
def test_control_format_and_undecodable_characters_are_refused(raw, reason):
    parsed = doi.parse(raw)
    assert not parsed.valid and parsed.refused == reason
    assert [f.code for f in doi.check_doi(raw)] == ["doi.malformed"]


def test_bare_preprint_id_is_refused_with_its_doi_suggested():
    parsed = doi.parse("2020.02.25.20021568")
    assert not parsed.valid
    assert doi.failure_reason(parsed) == (
        "'2020.02.25.20021568' is not a DOI but a medRxiv preprint ID: did you mean 10.1101/2020.02.25.20021568?"
    )


# --- the 10.64898 prefix (bioRxiv/medRxiv since 2025-12-01) -----------------------------------


def test_preprint_prefix_follows_the_ids_date():
    assert doi.preprint_from_filename("2020.02.10.20021584-p6.png").doi == "10.1101/2020.02.10.20021584"
    late = doi.preprint_from_filename("2026.01.28.12345678-p1.png")
    assert (late.doi, late.server, late.alternatives) == ("10.64898/2026.01.28.12345678", "medrxiv", ())
    near = doi.preprint_from_filename("2025.11.28.123456-p1.png")
    assert near.candidates == ("10.1101/2025.11.28.123456", "10.64898/2025.11.28.123456")
    assert doi.preprint_from_filename("2025.12.03.123456-p1.png").candidates == (
        "10.64898/2025.12.03.123456",
        "10.1101/2025.12.03.123456",
    )


def test_either_prefix_matches_the_file_names_id():
    def codes(raw, name):
        return [f.code for f in doi.check_doi(raw, name)]

    name = "2020.02.10.20021584-p6-52%0.png"
    assert codes("10.64898/2020.02.10.20021584", name) == []
    assert codes("10.64898/2026.01.28.12345678v2", "2026.01.28.12345678-p1.png") == []
    assert codes("10.1101/2026.01.28.12345678", "2026.01.28.12345678-p1.png") == []
    assert codes("10.64898/2020.02.11.20021584", name) == ["doi.mismatch"]


def test_derivable_hint_names_the_new_prefix_and_both_near_the_change():
    [late] = doi.check_doi(None, "2026.01.28.12345678-p1.png")
    assert late.hint == "set the DOI to 10.64898/2026.01.28.12345678"
    [near] = doi.check_doi(None, "2025.11.28.123456-p1.png")
    assert near.hint.startswith("set the DOI to 10.1101/2025.11.28.123456 or 10.64898/2025.11.28.123456")


def test_new_prefix_keeps_the_six_and_eight_digit_rule():
    assert doi.preprint_from_doi("10.64898/2026.01.05.123456").server == "biorxiv"
    assert doi.preprint_from_doi("10.64898/2026.01.05.12345678").server == "medrxiv"
    assert doi.preprint_from_doi("10.64898/2026.01.05.1234567") is None or (
        doi.preprint_from_doi("10.64898/2026.01.05.1234567").server == "biorxiv/medrxiv"
    )
