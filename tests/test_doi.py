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
    codes = lambda raw, name=None: sorted(f.code for f in doi.check_doi(raw, name))  # noqa: E731
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
