"""DOI normalization and preprint IDs: pure string functions, no I/O, no network.

Owns what a DOI *looks like*; whether it exists is `doi_resolve`'s job. Imports only `findings`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from urllib.parse import unquote

from ctcurate.core.findings import Finding, error, warning

PREPRINT_PREFIX = "10.1101"
NEW_PREPRINT_PREFIX = "10.64898"  # bioRxiv/medRxiv DOIs minted since December 2025
PREFIX_CHANGEOVER = date(2025, 12, 1)
# An ID's date is when the manuscript was submitted; its DOI is minted when it is posted, days
# later. IDs dated this close to the change-over may carry either prefix: the registry decides.
CHANGEOVER_BEFORE, CHANGEOVER_AFTER = timedelta(days=14), timedelta(days=7)

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_URL_PREFIX = re.compile(r"^(?:https?://)?(?:dx\.|www\.)?doi\.org/", re.IGNORECASE)
_DOI_PREFIX = re.compile(r"^(?:urn:)?doi:\s*", re.IGNORECASE)
# A bioRxiv/medRxiv landing or PDF URL: the DOI is in its path, followed by vN and .full.pdf etc.
_CONTENT_URL = re.compile(
    r"^(?:https?://)?(?:www\.|connect\.)?(?:bio|med)rxiv\.org/content/(?:early/\d{4}/\d{2}/\d{2}/)?"
    r"(?P<doi>10\.\d{4,9}/(?:\d{4}\.\d{2}\.\d{2}\.)?\d{6,8})(?:v\d+)?(?:[./?#].*)?$",
    re.IGNORECASE,
)
_TRAILING = ".,;"
_WS = re.compile(r"\s+")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_VALID = re.compile(r"^10\.\d{4,9}/\S+$")

# File names such as 2020.02.25.20021568-p23-108%3.png (medRxiv) or 2020.01.24.919183-p27-132.png
_PREPRINT_NAME = re.compile(r"^(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})\.(?P<n>\d{8}|\d{6})(?!\d)")
_BARE_ID = re.compile(r"^\d{4}\.\d{2}\.\d{2}\.(?:\d{8}|\d{6})(?:v\d+)?$")
_PREPRINT_DOI = re.compile(
    r"^(?:10\.1101|10\.64898)/(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})\.(?P<n>\d{6}|\d{8})(?:v\d+)?$"
)
_OLD_BIORXIV_DOI = re.compile(r"^10\.1101/\d{6}(?:v\d+)?$")


@dataclass(frozen=True)
class NormalizedDoi:
    """A cleaned DOI and the repairs made to reach it (stable codes, e.g. `doi.whitespace`).

    `refused` says why the text can never be a DOI however it is cleaned (a control or bidi
    character, bytes that are not UTF-8); such a DOI is not valid.
    """

    raw: str
    doi: str
    repairs: tuple[str, ...] = field(default=())
    refused: str | None = None

    @property
    def valid(self) -> bool:
        return self.refused is None and bool(_VALID.match(self.doi))


@lru_cache(maxsize=4096)
def _ascii_lookalike(char: str) -> str | None:
    """The ASCII character `char` is confusable with, from Unicode's confusables data (loaded only
    when a DOI has a non-ASCII character: its import is a tenth of a second of every command)."""
    from confusable_homoglyphs import confusables  # type: ignore[import-untyped]

    found = confusables.is_confusable(char, preferred_aliases=[], greedy=True)
    for entry in found or ():
        for glyph in entry["homoglyphs"]:
            if len(glyph["c"]) == 1 and glyph["c"].isascii() and glyph["c"].isprintable():
                return str(glyph["c"])
    return None


def _fold_lookalikes(text: str) -> str:
    if text.isascii():
        return text
    return "".join((_ascii_lookalike(c) or c) if not c.isascii() else c for c in text)


def _refusal(text: str) -> str | None:
    """Why `text` cannot be a DOI at all: control, bidi/format characters or undecodable bytes."""
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            return "is not valid UTF-8"
        if category == "Cc" and not char.isspace():
            return f"holds the control character U+{ord(char):04X}"
        if category == "Cf" and ord(char) not in _ZERO_WIDTH:
            name = unicodedata.name(char, "format character")
            return f"holds the invisible format character U+{ord(char):04X} ({name})"
    return None


def _strip_trailing(text: str, repairs: set[str]) -> str:
    """Punctuation that prose puts after a DOI: `.`, `,`, `;`, and a `)` that closes nothing."""
    while text:
        last = text[-1]
        if last in _TRAILING or (last == ")" and text.count(")") > text.count("(")):
            text = text[:-1].rstrip()
            repairs.add("doi.punctuation")
            continue
        break
    return text


def _unwrap(text: str, repairs: set[str], decode: bool) -> tuple[str, bool]:
    """Remove one `doi:` or URL prefix; a doi.org URL also loses its ?query and #fragment and, the
    first time only, is percent-decoded (`%2525` is `%25`: the DOI holds a literal `%25`).
    Returns the text and whether it may still be decoded."""
    if m := _DOI_PREFIX.match(text):
        text = text[m.end():]
    elif m := _URL_PREFIX.match(text):
        text = re.split(r"[?#]", text[m.end():], maxsplit=1)[0]
        if decode and (decoded := unquote(text, errors="surrogateescape")) != text:
            repairs.add("doi.url-encoded")
            text = decoded
        decode = False
    elif m := _CONTENT_URL.match(text):
        text = m["doi"]
    else:
        return text, decode
    repairs.add("doi.prefix")
    return text, decode


def _clean_once(text: str, repairs: set[str], decode: bool) -> tuple[str, bool]:
    out = text.translate(_ZERO_WIDTH)
    if out != text:
        repairs.add("doi.zero-width")
    folded = _fold_lookalikes(unicodedata.normalize("NFKC", out))
    if folded != out:
        repairs.add("doi.lookalike")
    stripped = folded.strip()
    if stripped != folded:
        repairs.add("doi.whitespace")
    out, decode = _unwrap(stripped, repairs, decode)
    squeezed = _WS.sub("", out)
    if squeezed != out:
        repairs.add("doi.inner-whitespace")
    out = _strip_trailing(squeezed, repairs)
    # The DOI Handbook folds case for ASCII letters only; `str.lower` would also merge
    # non-ASCII letters that may belong to different DOIs.
    return out.translate(_ASCII_LOWER), decode


def parse(raw: object) -> NormalizedDoi:
    """Clean `raw` to its canonical form, remembering every repair; never raises. Idempotent:
    every step only removes or folds, and the one percent-decoding needs a URL prefix, which the
    result never has."""
    text = "" if raw is None else str(raw)
    repairs: set[str] = set()
    current, decode = text, True
    for _ in range(64):
        cleaned, decode = _clean_once(current, repairs, decode)
        if cleaned == current:
            break
        current = cleaned
    return NormalizedDoi(raw=text, doi=current, repairs=tuple(sorted(repairs)), refused=_refusal(text))


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
    """A bioRxiv/medRxiv identifier read from a file name or a DOI.

    `doi` carries the prefix the ID's date gives; `alternatives` the other prefix's DOI when the
    ID is dated near the 10.1101 -> 10.64898 change-over (only the registry can tell which exists).
    """

    doi: str
    server: str  # "biorxiv", "medrxiv" or "biorxiv/medrxiv" where the form does not tell
    posted: date | None
    alternatives: tuple[str, ...] = ()

    @property
    def ident(self) -> str:
        """The ID without prefix and version (`2020.02.10.20021584`): what both prefixes share."""
        return strip_version(self.doi).split("/", 1)[1]

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.doi, *self.alternatives)


def _real_date(y: str, m: str, d: str) -> date | None:
    try:
        return date(int(y), int(m), int(d))
    except ValueError:
        return None


def prefix_for(posted: date) -> str:
    """The prefix a preprint ID dated `posted` is minted under (10.64898 from 2025-12-01)."""
    return NEW_PREPRINT_PREFIX if posted >= PREFIX_CHANGEOVER else PREPRINT_PREFIX


def _preprint_id(ident: str, digits: str, posted: date) -> PreprintId:
    server = "medrxiv" if len(digits) == 8 else "biorxiv"
    near = PREFIX_CHANGEOVER - CHANGEOVER_BEFORE <= posted < PREFIX_CHANGEOVER + CHANGEOVER_AFTER
    prefix = prefix_for(posted)
    other = NEW_PREPRINT_PREFIX if prefix == PREPRINT_PREFIX else PREPRINT_PREFIX
    return PreprintId(f"{prefix}/{ident}", server, posted, (f"{other}/{ident}",) if near else ())


def preprint_from_filename(name: str) -> PreprintId | None:
    """`2020.02.10.20021584-p6-52%0.png` -> 10.1101/2020.02.10.20021584 (medRxiv); None if no real date.

    IDs dated from 2025-12-01 give 10.64898/...; near that day the other prefix is an alternative.
    """
    m = _PREPRINT_NAME.match(name.strip())
    if not m:
        return None
    posted = _real_date(m["y"], m["m"], m["d"])
    if posted is None:
        return None
    return _preprint_id(f"{m['y']}.{m['m']}.{m['d']}.{m['n']}", m["n"], posted)


def preprint_from_doi(doi: object) -> PreprintId | None:
    """Recognize bioRxiv/medRxiv DOIs: dated 10.1101 or 10.64898 ones, and old numeric 10.1101/NNNNNN."""
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


def same_preprint(doi: str, name_id: PreprintId) -> bool:
    """True when `doi` is the preprint `name_id` under either prefix (any version): the suffix decides."""
    pre = preprint_from_doi(doi)
    return pre is not None and pre.posted is not None and pre.ident == name_id.ident


def bare_preprint_hint(text: str) -> str | None:
    """For a bare preprint ID (`2020.02.25.20021568`): the DOI it stands for, as a suggestion."""
    if not _BARE_ID.match(text.strip()):
        return None
    pre = preprint_from_filename(text)
    if pre is None:
        return None
    server = {"medrxiv": "medRxiv", "biorxiv": "bioRxiv"}.get(pre.server, pre.server)
    return f"a {server} preprint ID: did you mean {' or '.join(pre.candidates)}?"


_REPAIR_TEXT = {
    "doi.whitespace": "leading or trailing whitespace",
    "doi.inner-whitespace": "whitespace inside the DOI",
    "doi.prefix": "a doi:/URL prefix (or the URL's ?query/#fragment)",
    "doi.url-encoded": "URL-encoded characters",
    "doi.zero-width": "invisible zero-width characters",
    "doi.lookalike": "look-alike Unicode characters (e.g. a Cyrillic letter, a dash or slash that is not ASCII)",
    "doi.punctuation": "punctuation after it ('.', ',', ';' or an unmatched ')')",
}


def failure_reason(parsed: NormalizedDoi) -> str:
    """Why `parsed` is not a DOI, in one line (for `ctcurate doi normalize`)."""
    shown = repr(parsed.raw.strip())  # repr: control, bidi and undecodable characters stay visible
    if parsed.refused:
        return f"{shown} is not a DOI: it {parsed.refused}"
    if not parsed.doi:
        return "empty"
    hint = bare_preprint_hint(parsed.doi)
    return f"{shown} is not a DOI but {hint}" if hint else f"{shown} is not a DOI (expected 10.NNNN/suffix)"


def derivable_hint(pre: PreprintId) -> str:
    """What to write in an empty DOI cell of a preprint's image; both DOIs near the change-over."""
    if not pre.alternatives:
        return f"set the DOI to {pre.doi}"
    return (
        f"set the DOI to {pre.doi} or {pre.alternatives[0]} (the ID is dated near the "
        f"{PREFIX_CHANGEOVER.isoformat()} prefix change; `ctcurate doi resolve` tells which exists)"
    )


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
                    hint=derivable_hint(from_name),
                    **where,
                )
            )
        return findings
    parsed = parse(text)
    if parsed.refused:
        reason = f"not a DOI: it {parsed.refused}"
        return [error("doi.malformed", reason, value=text, hint="retype the DOI from the paper", **where)]
    for code in parsed.repairs:
        findings.append(
            warning(code, f"DOI has {_REPAIR_TEXT[code]}", value=text, hint=f"write it as {parsed.doi}", **where)
        )
    if not parsed.valid:
        findings.append(
            error(
                "doi.malformed",
                "not a DOI (expected 10.NNNN/suffix)",
                value=text,
                hint=bare_preprint_hint(parsed.doi) or "check the paper's DOI",
                **where,
            )
        )
    elif from_name and not same_preprint(parsed.doi, from_name):
        findings.append(
            error(
                "doi.mismatch",
                f"DOI disagrees with the preprint ID in the file name ({from_name.ident})",
                value=text,
                hint=f"use {' or '.join(from_name.candidates)} or rename the file",
                **where,
            )
        )
    return findings
