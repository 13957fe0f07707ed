"""Findings: every expected problem is a value, never an exception.

Owns the `Finding` record, its severities, the summary and the text/JSON renderings shared by
every command. Imports nothing else from ctcurate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from enum import Enum

from pydantic import BaseModel, ConfigDict


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Finding(BaseModel):
    """One problem, located as precisely as the input allows (row as Excel shows it, header = 1)."""

    model_config = ConfigDict(frozen=True)

    code: str
    severity: Severity
    file: str | None = None
    row: int | None = None
    column: str | None = None
    value: str | None = None
    message: str
    hint: str | None = None

    def location(self) -> str:
        parts = [self.file or "-"]
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)


def error(code: str, message: str, **where: object) -> Finding:
    return Finding(code=code, severity=Severity.ERROR, message=message, **where)  # type: ignore[arg-type]


def warning(code: str, message: str, **where: object) -> Finding:
    return Finding(code=code, severity=Severity.WARNING, message=message, **where)  # type: ignore[arg-type]


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def summarize(findings: list[Finding]) -> dict[str, object]:
    by_code = Counter(f.code for f in findings)
    return {
        "errors": sum(f.severity is Severity.ERROR for f in findings),
        "warnings": sum(f.severity is Severity.WARNING for f in findings),
        "by_code": dict(sorted(by_code.items())),
    }


def document(findings: list[Finding], **extra_summary: object) -> dict[str, object]:
    """The JSON document of a run: its findings and their summary (plus the command's own figures)."""
    return {"findings": [f.model_dump(mode="json") for f in findings], "summary": summarize(findings) | extra_summary}


def dump_json(doc: object) -> str:
    """Every command's JSON output: indented, non-ASCII kept."""
    return json.dumps(doc, indent=2, ensure_ascii=False)


def to_json(findings: list[Finding], **extra_summary: object) -> str:
    return dump_json(document(findings, **extra_summary))


def one_line(text: str) -> str:
    """`text` with every character that would break or reorder a line of output (newline, other
    controls, right-to-left and other format marks) written as its escape, e.g. `\\n`, `\\u202e`."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def to_text(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        value = f" [{f.value!r}]" if f.value is not None else ""
        lines.append(one_line(f"{f.severity.value}: {f.location()}: {f.code}: {f.message}{value}"))
        if f.hint:
            lines.append(one_line(f"    hint: {f.hint}"))
    s = summarize(findings)
    lines.append(f"{s['errors']} error(s), {s['warnings']} warning(s)")
    return "\n".join(lines)


# A sheet full of one mistake (every caption with a trailing space) would otherwise keep a
# finding per row: at a million rows, gigabytes that no reader looks at one by one.
DEFAULT_LISTED_PER_CODE = 1000


class CappedFindings:
    """Counts findings and lists at most `limit` of each (file, code); `None` lists everything.

    `collect(out)` is the list the checks append to while rows stream past, so memory stays
    bounded however broken a sheet is; `unlisted_findings()` says, per file and code, how many
    more there were (`findings.unlisted`). The first `limit` in the order admitted are listed.
    """

    def __init__(self, limit: int | None = DEFAULT_LISTED_PER_CODE) -> None:
        self.limit = limit
        self._counts: Counter[tuple[str | None, str]] = Counter()
        self._unlisted: dict[tuple[str | None, str], tuple[int, Severity]] = {}

    def admit(self, finding: Finding) -> bool:
        """Count `finding`; True when it is to be listed."""
        key = (finding.file, finding.code)
        self._counts[key] += 1
        if self.limit is None or self._counts[key] <= self.limit:
            return True
        count, severity = self._unlisted.get(key, (0, finding.severity))
        worst = Severity.ERROR if Severity.ERROR in (severity, finding.severity) else Severity.WARNING
        self._unlisted[key] = (count + 1, worst)
        return False

    def keep(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings of `findings` that are to be listed (the rest counted)."""
        return [f for f in findings if self.admit(f)]

    def collect(self, out: list[Finding]) -> FindingCollector:
        """Something to `append`/`extend` findings to: those to be listed land in `out`."""
        return FindingCollector(self, out)

    @property
    def unlisted(self) -> dict[str, int]:
        """Findings counted but not listed, by code (all files together)."""
        out: Counter[str] = Counter()
        for (_file, code), (count, _severity) in self._unlisted.items():
            out[code] += count
        return dict(sorted(out.items()))

    def unlisted_findings(self) -> list[Finding]:
        """One `findings.unlisted` per file and code that had more than `limit` findings; an error
        when any unlisted one is."""
        return [
            Finding(
                code="findings.unlisted",
                severity=severity,
                file=file,
                value=code,
                message=f"{count:,} more {code} finding(s) not listed: only the first {self.limit or 0:,} are",
                hint="fix the listed ones (ctcurate validate --fix fixes many), then run again to see the rest",
            )
            for (file, code), (count, severity) in self._unlisted.items()
        ]


class FindingCollector:
    """A list-like front of `CappedFindings` for code that appends findings one by one."""

    def __init__(self, cap: CappedFindings, out: list[Finding]) -> None:
        self._cap = cap
        self._out = out

    def append(self, finding: Finding) -> None:
        if self._cap.admit(finding):
            self._out.append(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.append(finding)
