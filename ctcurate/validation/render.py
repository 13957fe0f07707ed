"""`validate`'s text report: the summary first, then the details grouped by severity and code.

Owns which findings `--fix` answers (a planned cell fix covers every finding on its cell) and the
terminal rendering: one summary table (count per code and severity, how many `--fix` fixes), then
errors before warnings, each code's findings under one heading with its shared hint said once,
every line cut to the terminal width, colour only when asked. Pure: returns strings, never prints.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from ctcurate.core.findings import Finding, Severity, one_line
from ctcurate.validation.checks import CellFix

_ANSI = {"error": "1;31", "warning": "33", "dim": "2", "bold": "1"}
_SEVERITY_ORDER = (Severity.ERROR, Severity.WARNING)


def _cell(file: str | None, row: int | None, column: str | None) -> tuple[str, int | None, str | None]:
    return (Path(file or "").name, row, column)


def fixable(findings: Iterable[Finding], fixes: Iterable[CellFix]) -> list[Finding]:
    """The findings on a cell that `--fix` rewrites (it answers every finding of that cell)."""
    cells = {_cell(str(fx.path), fx.row, fx.column) for fx in fixes}
    return [f for f in findings if f.row is not None and _cell(f.file, f.row, f.column) in cells]


def _paint(text: str, style: str, colour: bool) -> str:
    return f"\033[{_ANSI[style]}m{text}\033[0m" if colour else text


def _counts(findings: list[Finding], fixed: list[Finding]) -> list[tuple[Severity, str, int, int]]:
    """(severity, code, count, fixable) rows, errors first, then by count."""
    total = Counter((f.severity, f.code) for f in findings)
    can = Counter((f.severity, f.code) for f in fixed)
    return sorted(((s, c, n, can[(s, c)]) for (s, c), n in total.items()),
                  key=lambda r: (_SEVERITY_ORDER.index(r[0]), -r[2], r[1]))


def headline(findings: list[Finding]) -> str:
    errors = sum(f.severity is Severity.ERROR for f in findings)
    return f"{errors} error(s), {len(findings) - errors} warning(s)"


def summary_text(findings: list[Finding], fixed: list[Finding], descriptions: Mapping[str, str],
                 width: int = 100, colour: bool = False) -> str:
    """The headline and one row per (severity, code): the part `--quiet` prints."""
    errors = sum(f.severity is Severity.ERROR for f in findings)
    head = headline(findings)
    if not findings:
        return "no problems found"
    lines = [
        _paint(head, "error" if errors else "warning", colour)
        + f"; `--fix OUT` would fix {len(fixed)} of them (in a copy)",
        "",
        f"  {'severity':<8} {'count':>5} {'--fix':>5}  {'code':<22} meaning",
    ]
    for sev, code, n, can in _counts(findings, fixed):
        row = f"  {sev.value:<8} {n:>5} {can or '-':>5}  {code:<22} {descriptions.get(code, '')}"
        lines.append(_paint(_cut(row, width), sev.value, colour) if colour else _cut(row, width))
    return "\n".join(lines)


def details_text(findings: list[Finding], fixed: list[Finding], width: int = 100, colour: bool = False) -> str:
    """Every finding, grouped: errors, then warnings; within each, by code (largest first)."""
    fixed_ids = {id(f) for f in fixed}
    lines: list[str] = []
    for sev, code, n, can in _counts(findings, fixed):
        mine = [f for f in findings if f.severity is sev and f.code == code]
        hints = {f.hint for f in mine}
        shared = hints.pop() if len(hints) == 1 else None
        fix_note = f", {can} fixed by --fix" if can else ""
        lines += ["", _paint(f"{sev.value}: {code} ({n}{fix_note})", sev.value, colour)]
        if shared:
            lines += [_paint(x, "dim", colour) for x in _wrap(f"hint: {shared}", width, "  ", "        ")]
        current_file: str | None = None
        for f in mine:
            if f.file != current_file:
                current_file = f.file
                lines.append(f"  {one_line(f.file or '-')}:")
            lines += _finding_lines(f, id(f) in fixed_ids, not shared, width, colour)
    return "\n".join(lines).lstrip("\n")


def _finding_lines(f: Finding, fixed: bool, with_hint: bool, width: int, colour: bool) -> list[str]:
    """One finding under its file: where in the file, the message, the value unless the message quotes it."""
    where = ", ".join(x for x in (f"row {f.row}" if f.row is not None else "", repr(f.column) if f.column else "") if x)
    value = ""
    if f.value is not None and f.value not in f.message:
        value = f" {_short(repr(f.value))}"
    mark = " [--fix]" if fixed else ""
    lines = _wrap(f"{where + ': ' if where else ''}{f.message}{value}{mark}", width, "    ", "        ")
    if with_hint and f.hint:
        lines += [_paint(x, "dim", colour) for x in _wrap(f"hint: {f.hint}", width, "        ", "          ")]
    return lines


def to_text(findings: list[Finding], fixes: Iterable[CellFix], descriptions: Mapping[str, str],
            quiet: bool = False, width: int = 100, colour: bool = False) -> str:
    """The whole report: summary first, then (unless `quiet`) the details."""
    fixed = fixable(findings, fixes)
    parts = [summary_text(findings, fixed, descriptions, width, colour)]
    if findings and not quiet:
        parts += ["", details_text(findings, fixed, width, colour)]
    return "\n".join(parts) + "\n"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(one_line(text), width=max(width, 40), initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False) or [first]
