"""Reading metadata sheets (.xlsx, .csv) and split lists exactly as a curator sees them.

Owns turning a file into rows of cell values plus the findings only the file format can show:
formulas, error cells (`#VALUE!`), Excel-made dates, merged cells, hidden rows and columns, extra
sheets, text encodings. Nothing is silently turned into NaN. A file that cannot be read at all
raises `SheetError` with a one-line message naming it. Knows nothing about what the columns mean.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter, range_boundaries
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet._read_only import ReadOnlyWorksheet
from openpyxl.worksheet._reader import VALUE_TAG, WorkSheetParser

from .findings import Finding, error, warning

CellValue = str | int | float | bool | None

XLSX_SUFFIXES = (".xlsx", ".xlsm")
CSV_SUFFIXES = (".csv",)


class SheetError(Exception):
    """The file cannot be read as a sheet at all; the message is one line and names the file."""


@dataclass(frozen=True)
class SheetRow:
    """One data row: its number as Excel shows it (header = 1) and its cells in header order."""

    number: int
    values: tuple[CellValue, ...]


@dataclass(frozen=True)
class Sheet:
    """A sheet read in full: header cells, data rows, and what the file format itself revealed."""

    path: Path
    name: str | None  # worksheet title for .xlsx, None for .csv
    header: tuple[str, ...]
    rows: list[SheetRow]
    findings: list[Finding] = field(default_factory=list)
    encoding: str | None = None  # .csv only

    def records(self, columns: dict[str, str]) -> Iterator[tuple[int, dict[str, CellValue]]]:
        """Rows as `(number, {canonical column: value})`; `columns` maps canonical -> header cell."""
        index = {canon: self.header.index(head) for canon, head in columns.items()}
        for row in self.rows:
            vals = row.values
            yield row.number, {canon: (vals[i] if i < len(vals) else None) for canon, i in index.items()}


def _label(path: Path) -> str:
    return path.name


def read_sheet(path: Path) -> Sheet:
    """Read a .xlsx or .csv metadata sheet; raise `SheetError` when it cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    raise SheetError(f"{path}: not a sheet (expected .xlsx or .csv)")


def find_columns(sheet: Sheet, wanted: dict[str, str]) -> tuple[dict[str, str], list[Finding]]:
    """Map each canonical column to its header cell, matching case and whitespace loosely.

    `wanted` maps canonical names to the header text expected. Raises `SheetError` naming every
    missing column; a header spelled differently (case, spaces) is a `sheet.header` warning.
    """
    by_key: dict[str, str] = {}
    for head in sheet.header:
        by_key.setdefault(_header_key(head), head)
    found: dict[str, str] = {}
    findings: list[Finding] = []
    missing = []
    for canon, expected in wanted.items():
        head = by_key.get(_header_key(expected))
        if head is None:
            missing.append(expected)
            continue
        found[canon] = head
        if head != expected:
            col = get_column_letter(sheet.header.index(head) + 1)
            findings.append(
                warning(
                    "sheet.header",
                    f"column header {head!r} is spelled differently from {expected!r}",
                    file=_label(sheet.path), row=1, column=col, value=head, hint=f"rename it to {expected!r}",
                )
            )
    if missing:
        names = ", ".join(repr(m) for m in missing)
        where = f" (sheet {sheet.name!r})" if sheet.name else ""
        raise SheetError(f"{sheet.path}{where}: missing column(s) {names}")
    return found, findings


def _header_key(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").split()).casefold()


# --- .xlsx ----------------------------------------------------------------------------------


class _Parser(WorkSheetParser):
    """openpyxl's streaming sheet parser, keeping a formula's cached value beside its text.

    The public API offers either the formula (data_only=False) or its cached result (data_only=True)
    per load; a curator needs both, from one pass over a 100,000-row sheet.
    """

    def parse_cell(self, element: Any) -> dict[str, Any]:
        cell = super().parse_cell(element)
        if cell["data_type"] == "f":
            cached = element.findtext(VALUE_TAG, None)
            kind = element.get("t", "n")
            if cached is not None and kind == "n":
                try:
                    num = float(cached)
                    cached = int(num) if num.is_integer() and "." not in cached and "E" not in cached.upper() else num
                except ValueError:
                    pass
            elif kind == "b" and cached is not None:
                cached = bool(int(cached))
            cell["cached"] = cached
            cell["cached_type"] = kind
        return cell


def _iso(value: Any) -> str:
    if isinstance(value, datetime) and value.time() == time(0):
        return value.date().isoformat()
    if isinstance(value, (date, datetime, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def _read_xlsx(path: Path) -> Sheet:
    label = _label(path)
    try:
        wb = load_workbook(path, read_only=True, data_only=False)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError, TypeError, EOFError) as exc:
        raise SheetError(f"{path}: not a readable .xlsx workbook ({_reason(exc)})") from exc
    try:
        return _read_workbook(path, label, wb)
    except SheetError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError, EOFError, SyntaxError) as exc:
        # A truncated or corrupt member shows up only while streaming rows.
        raise SheetError(f"{path}: not a readable .xlsx workbook ({_reason(exc)})") from exc
    finally:
        wb.close()


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _read_workbook(path: Path, label: str, wb: Any) -> Sheet:
    findings: list[Finding] = []
    sheets = wb.worksheets
    states = {ws.title: getattr(ws, "sheet_state", "visible") for ws in sheets}
    visible = [ws for ws in sheets if states[ws.title] == "visible"]
    if not sheets:
        raise SheetError(f"{path}: workbook has no worksheet")
    ws = (visible or sheets)[0]
    if not isinstance(ws, ReadOnlyWorksheet):
        raise SheetError(f"{path}: first sheet {ws.title!r} is not a worksheet")
    for other in sheets:
        if other is ws:
            continue
        state = states[other.title]
        extra = "" if state == "visible" else f" ({state})"
        findings.append(
            warning(
                "sheet.extra-sheet",
                f"workbook has another sheet {other.title!r}{extra}; only {ws.title!r} is read",
                file=label, value=other.title, hint="move its rows into the data sheet or delete it",
            )
        )

    source = ws._get_source()
    parser = _Parser(
        source,
        ws._shared_strings,
        data_only=False,
        epoch=wb.epoch,
        date_formats=wb._date_formats,
        timedelta_formats=wb._timedelta_formats,
    )
    try:
        header, rows = _rows(parser, label, findings)
    finally:
        source.close()
    if header is None:
        raise SheetError(f"{path}: sheet {ws.title!r} is empty (no header row)")
    width = len(header)
    _hidden(parser, label, findings)
    rows = _merged(parser, rows, label, findings)
    _unnamed(header, rows, width, label, findings)
    return Sheet(path=path, name=ws.title, header=header, rows=rows, findings=_named(findings, header))


def _named(findings: list[Finding], header: tuple[str, ...]) -> list[Finding]:
    """Findings located by column letter, renamed to the column's header where it has one."""
    names = {get_column_letter(i + 1): h.strip() for i, h in enumerate(header) if h.strip()}
    return [
        f.model_copy(update={"column": names[f.column]}) if f.column in names else f
        for f in findings
    ]


def _rows(
    parser: WorkSheetParser, label: str, findings: list[Finding]
) -> tuple[tuple[str, ...] | None, list[SheetRow]]:
    header: tuple[str, ...] | None = None
    rows: list[SheetRow] = []
    for number, cells in parser.parse():
        values: list[CellValue] = []
        for cell in cells:
            col = cell["column"]
            while len(values) < col - 1:
                values.append(None)
            values.append(_cell_value(cell, number, label, findings))
        while values and values[-1] is None:
            values.pop()
        if header is None:
            if not values:
                continue
            if number != 1:
                findings.append(
                    warning(
                        "sheet.header-row",
                        f"the header is on row {number}, not row 1",
                        file=label, row=number, hint="delete the rows above the header",
                    )
                )
            header = tuple("" if v is None else str(v) for v in values)
            continue
        rows.append(SheetRow(number, tuple(values)))
    return header, rows


def _cell_value(cell: dict[str, Any], number: int, label: str, findings: list[Finding]) -> CellValue:
    kind = cell["data_type"]
    value = cell["value"]
    col = get_column_letter(cell["column"])
    if kind == "f":
        formula = str(getattr(value, "text", value))
        cached = cell.get("cached")
        if cell.get("cached_type") == "e":
            findings.append(
                error(
                    "cell.error", f"formula {formula} evaluates to the error {cached}",
                    file=label, row=number, column=col, value=formula, hint="type the value instead of a formula",
                )
            )
            return None
        findings.append(
            warning(
                "cell.formula",
                f"cell holds the formula {formula}; its last computed value {cached!r} is used",
                file=label, row=number, column=col, value=formula, hint="replace the formula by its value",
            )
        )
        return cached if isinstance(cached, (str, int, float, bool)) else None
    if kind == "e":
        findings.append(
            error(
                "cell.error", f"cell holds the Excel error {value}",
                file=label, row=number, column=col, value=str(value), hint="type the intended value",
            )
        )
        return None
    if kind == "d" or isinstance(value, (date, datetime, time, timedelta)):
        text = _iso(value)
        findings.append(
            warning(
                "cell.date",
                f"Excel stored this cell as a date/time ({text}); was it typed as something else?",
                file=label, row=number, column=col, value=text,
                hint="format the cell as text and retype the value",
            )
        )
        return text
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _hidden(parser: WorkSheetParser, label: str, findings: list[Finding]) -> None:
    for key, attrs in sorted(parser.row_dimensions.items(), key=lambda kv: int(kv[0])):
        if str(attrs.get("hidden", "0")).lower() in ("1", "true"):
            findings.append(
                warning(
                    "sheet.hidden-row", f"row {key} is hidden in Excel (it is still validated)",
                    file=label, row=int(key), hint="unhide it so curators see what is checked",
                )
            )
    for attrs in parser.column_dimensions.values():
        if str(attrs.get("hidden", "0")).lower() in ("1", "true"):
            first, last = int(attrs["min"]), int(attrs.get("max", attrs["min"]))
            span = get_column_letter(first) + ("" if last == first else f":{get_column_letter(last)}")
            findings.append(
                warning(
                    "sheet.hidden-column", f"column {span} is hidden in Excel (it is still validated)",
                    file=label, column=get_column_letter(first), hint="unhide it so curators see what is checked",
                )
            )


def _merged(parser: WorkSheetParser, rows: list[SheetRow], label: str, findings: list[Finding]) -> list[SheetRow]:
    """Report merged ranges and give every covered cell the value Excel shows across the range."""
    merged = getattr(parser, "merged_cells", None)
    ranges = [m.ref for m in merged.mergeCell] if merged is not None else []
    if not ranges:
        return rows
    by_number = {r.number: i for i, r in enumerate(rows)}
    grid = {r.number: list(r.values) for r in rows}
    for ref in ranges:
        min_col, min_row, max_col, max_row = range_boundaries(str(ref))
        top = grid.get(min_row, [])
        value = top[min_col - 1] if len(top) >= min_col else None
        findings.append(
            warning(
                "sheet.merged-cells",
                f"cells {ref} are merged; each covered cell is read as {value!r}",
                file=label, row=min_row, column=get_column_letter(min_col), value=str(ref),
                hint="unmerge the cells and fill each one",
            )
        )
        for rnum in range(min_row, max_row + 1):
            if rnum not in grid or rnum == 1:
                continue
            vals = grid[rnum]
            while len(vals) < max_col:
                vals.append(None)
            for c in range(min_col, max_col + 1):
                if (rnum, c) != (min_row, min_col):
                    vals[c - 1] = value
    return [SheetRow(r.number, tuple(grid[r.number])) if r.number in by_number else r for r in rows]


def _unnamed(header: tuple[str, ...], rows: list[SheetRow], width: int, label: str, findings: list[Finding]) -> None:
    """Values in columns that have no header cell are reported once per column."""
    seen: dict[int, int] = {}
    for row in rows:
        for i, v in enumerate(row.values):
            if v is not None and (i >= width or not header[i].strip()) and i not in seen:
                seen[i] = row.number
    for i, rnum in sorted(seen.items()):
        findings.append(
            warning(
                "sheet.unnamed-column",
                f"column {get_column_letter(i + 1)} has values but no header; it is ignored",
                file=label, row=rnum, column=get_column_letter(i + 1),
                hint="give it a header or move the values into a named column",
            )
        )


# --- .csv -----------------------------------------------------------------------------------


def decode_text(path: Path, data: bytes) -> tuple[str, str]:
    """Decode `data` as UTF-8 (with or without BOM), else Latin-1; refuse binary content."""
    head = data[:8192]
    if b"\x00" in head or _looks_binary(head):
        raise SheetError(f"{path}: binary content, not a text file")
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise SheetError(f"{path}: starts with a UTF-8 mark but is not UTF-8 (byte {exc.start})") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise SheetError(f"{path}: not readable as UTF-16 text") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _looks_binary(head: bytes) -> bool:
    if not head:
        return False
    controls = sum(1 for b in head if b < 9 or 13 < b < 32 or b == 127)
    return controls / len(head) > 0.05


def _read_csv(path: Path) -> Sheet:
    label = _label(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({_reason(exc)})") from exc
    text, encoding = decode_text(path, data)
    findings: list[Finding] = []
    if encoding == "latin-1":
        findings.append(
            warning(
                "sheet.encoding", "file is not UTF-8; it was read as Latin-1",
                file=label, hint="save it as UTF-8",
            )
        )
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise SheetError(f"{path}: not a readable CSV ({_reason(exc)})") from exc
    header: tuple[str, ...] | None = None
    rows: list[SheetRow] = []
    width = 0
    for number, record in enumerate(records, start=1):
        values: list[CellValue] = [v if v != "" else None for v in record]
        while values and values[-1] is None:
            values.pop()
        if header is None:
            if not values:
                continue
            if number != 1:
                findings.append(
                    warning(
                        "sheet.header-row", f"the header is on row {number}, not row 1",
                        file=label, row=number, hint="delete the rows above the header",
                    )
                )
            header = tuple(record)
            width = len(header)
            continue
        rows.append(SheetRow(number, tuple(values)))
    if header is None:
        raise SheetError(f"{path}: empty sheet (no header row)")
    if header and not header[0].strip() and _is_pandas_index(rows):
        # pandas' `to_csv` leaves its unnamed 0..n-1 index as the first column: harmless, not data.
        header = ("#index",) + header[1:]
    _unnamed(header, rows, width, label, findings)
    return Sheet(path=path, name=None, header=header, rows=rows, findings=findings, encoding=encoding)


def _is_pandas_index(rows: list[SheetRow]) -> bool:
    for i, row in enumerate(rows):
        if not row.values or str(row.values[0]).strip() != str(i):
            return False
    return True


# --- split lists ----------------------------------------------------------------------------


def read_lines(path: Path) -> list[tuple[int, str]]:
    """A split list's non-empty lines as `(line number, text)`, text exactly as written."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({_reason(exc)})") from exc
    text, _ = decode_text(path, data)
    return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
