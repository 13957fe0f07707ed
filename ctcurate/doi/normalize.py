"""DOI normalization and preprint IDs: pure string functions, no I/O, no network.

Owns what a DOI *looks like*; whether it exists is `doi_resolve`'s job. Imports only `findings`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import unquote

from ctcurate.core.findings import Finding, error, warning

PREPRINT_PREFIX = "10.1101"
NEW_PREPRINT_PREFIX = "10.64898"  # bioRxiv/medRxiv DOIs minted since December 2025

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
# Characters NFKC leaves alone but that readers take for ASCII punctuation.
_LOOKALIKES = str.maketrans(
    {
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
        "\u2044": "/", "\u2215": "/", "\u29f8": "/",
        "\u2024": ".", "\u00b7": ".",
        "\u2018": "'", "\u2019": "'",
    }
)
_PREFIX = re.compile(r"^(?:urn:)?doi:\s*|^(?:https?://)?(?:dx\.|www\.)?doi\.org/", re.IGNORECASE)
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_WS = re.compile(r"\s+")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_VALID = re.compile(r"^10\.\d{4,9}/\S+$")

# File names such as 2020.02.25.20021568-p23-108%3.png (medRxiv) or 2020.01.24.919183-p27-132.png
_PREPRINT_NAME = re.compile(r"^(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})\.(?P<n>\d{8}|\d{6})(?!\d)")
_PREPRINT_DOI = re.compile(
    r"^(?:10\.1101|10\.64898)/(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})\.(?P<n>\d{6}|\d{8})(?:v\d+)?$"
)
_OLD_BIORXIV_DOI = re.compile(r"^10\.1101/\d{6}(?:v\d+)?$")


@dataclass(frozen=True)
class NormalizedDoi:
    """A cleaned DOI and the repairs made to reach it (stable codes, e.g. `doi.whitespace`)."""

    raw: str
    doi: str
    repairs: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return bool(_VALID.match(self.doi))


def _clean_once(text: str, repairs: set[str]) -> str:
    out = text.translate(_ZERO_WIDTH)
    if out != text:
        repairs.add("doi.zero-width")
    folded = unicodedata.normalize("NFKC", out).translate(_LOOKALIKES)
    if folded != out:
        repairs.add("doi.lookalike")
    out = folded
    stripped = out.strip()
    if stripped != out:
        repairs.add("doi.whitespace")
    out = stripped
    while (m := _PREFIX.match(out)) and m.end() > 0:
        repairs.add("doi.prefix")
        out = out[m.end():].strip()
    if _PERCENT.search(out):
        decoded = unquote(out)
        if decoded != out:
            repairs.add("doi.url-encoded")
            out = decoded
    squeezed = _WS.sub("", out)
    if squeezed != out:
        repairs.add("doi.inner-whitespace")
    # The DOI Handbook folds case for ASCII letters only; `str.lower` would also merge
    # non-ASCII letters that may belong to different DOIs.
    return squeezed.translate(_ASCII_LOWER)


def parse(raw: object) -> NormalizedDoi:
    """Clean `raw` to its canonical form, remembering every repair; never raises."""
    text = "" if raw is None else str(raw)
    repairs: set[str] = set()
    current = text
    for _ in range(16):  # each pass only removes or folds; a fixpoint comes fast
        cleaned = _clean_once(current, repairs)
        if cleaned == current:
            break
        current = cleaned
    return NormalizedDoi(raw=text, doi=current, repairs=tuple(sorted(repairs)))


def normalize(raw: object) -> str:
    """The canonical DOI text: no prefix, no whitespace, decoded, ASCII lower case. Idempotent."""
    return parse(raw).doi


def is_valid(doi: str) -> bool:
    return bool(_VALID.match(doi))


def same_doi(a: object, b: object) -> bool:
    na, nb = normalize(a), normalize(b)
    return bool(na) and na == nb


@dataclass(frozen=True)
class PreprintId:
    """A bioRxiv/medRxiv identifier read from a file name or a DOI."""

    doi: str
    server: str  # "biorxiv", "medrxiv" or "biorxiv/medrxiv" where the form does not tell
    posted: date | None


def _real_date(y: str, m: str, d: str) -> date | None:
    try:
        return date(int(y), int(m), int(d))
    except ValueError:
        return None


def preprint_from_filename(name: str) -> PreprintId | None:
    """`2020.02.10.20021584-p6-52%0.png` -> 10.1101/2020.02.10.20021584 (medRxiv); None if no real date."""
    m = _PREPRINT_NAME.match(name.strip())
    if not m:
        return None
    posted = _real_date(m["y"], m["m"], m["d"])
    if posted is None:
        return None
    ident = f"{m['y']}.{m['m']}.{m['d']}.{m['n']}"
    server = "medrxiv" if len(m["n"]) == 8 else "biorxiv"
    return PreprintId(doi=f"{PREPRINT_PREFIX}/{ident}", server=server, posted=posted)


def preprint_from_doi(doi: object) -> PreprintId | None:
    """Recognize bioRxiv/medRxiv DOIs: dated 10.1101 ones, old numeric 10.1101/NNNNNN, and 10.64898/..."""
    norm = normalize(doi)
    m = _PREPRINT_DOI.match(norm)
    if m:
        posted = _real_date(m["y"], m["m"], m["d"])
        if posted is None:
            return None
        server = "medrxiv" if len(m["n"]) == 8 else "biorxiv"
        return PreprintId(doi=norm, server=server, posted=posted)
    if _OLD_BIORXIV_DOI.match(norm):
        return PreprintId(doi=norm, server="biorxiv", posted=None)
    if norm.startswith(NEW_PREPRINT_PREFIX + "/") and is_valid(norm):
        return PreprintId(doi=norm, server="biorxiv/medrxiv", posted=None)
    return None


def strip_version(doi: str) -> str:
    """`10.1101/2020.03.04.20031047v2` -> `10.1101/2020.03.04.20031047`."""
    return re.sub(r"v\d+$", "", doi) if preprint_from_doi(doi) else doi


_REPAIR_TEXT = {
    "doi.whitespace": "leading or trailing whitespace",
    "doi.inner-whitespace": "whitespace inside the DOI",
    "doi.prefix": "a doi:/URL prefix",
    "doi.url-encoded": "URL-encoded characters",
    "doi.zero-width": "invisible zero-width characters",
    "doi.lookalike": "look-alike Unicode characters (e.g. a dash or slash that is not ASCII)",
}


def check_doi(raw: object, file_name: str | None = None, **where: object) -> list[Finding]:
    """Findings for one sheet cell holding a DOI, given the row's image file name.

    Codes: doi.derivable (missing but the file name says it), doi.mismatch (disagrees with the file
    name's preprint ID), doi.malformed, and one warning per repair made by `parse`.
    """
    text = "" if raw is None else str(raw)
    from_name = preprint_from_filename(file_name) if file_name else None
    findings: list[Finding] = []
    if not text.strip():
        if from_name:
            findings.append(
                warning(
                    "doi.derivable",
                    f"DOI is missing but the file name is a {from_name.server} preprint ID",
                    value=text or None,
                    hint=f"set the DOI to {from_name.doi}",
                    **where,
                )
            )
        return findings
    parsed = parse(text)
    for code in parsed.repairs:
        findings.append(
            warning(code, f"DOI has {_REPAIR_TEXT[code]}", value=text, hint=f"write it as {parsed.doi}", **where)
        )
    if not parsed.valid:
        findings.append(
            error("doi.malformed", "not a DOI (expected 10.NNNN/suffix)", value=text, hint="check the paper's DOI", **where)
        )
    elif from_name and strip_version(parsed.doi) != from_name.doi:
        findings.append(
            error(
                "doi.mismatch",
                f"DOI disagrees with the preprint ID in the file name ({from_name.doi})",
                value=text,
                hint=f"use {from_name.doi} or rename the file",
                **where,
            )
        )
    return findings
