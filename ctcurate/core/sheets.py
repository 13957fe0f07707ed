"""Reading metadata sheets (.xlsx, .csv) and split lists exactly as a curator sees them.

Owns turning a file into rows of cell values plus the findings only the file format can show:
formulas, error cells (`#VALUE!`), Excel-made dates, merged cells, hidden rows and columns, extra
sheets, text encodings. Nothing is silently turned into NaN. A file that cannot be read at all
raises `SheetError` with a one-line message naming it. Knows nothing about what the columns mean.
`open_sheet` streams an .xlsx row by row (a million-row sheet is never held whole); `read_sheet`
is the same reading, kept whole.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from dataclasses import dataclass, field
from itertools import islice
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError, iterparse

from ctcurate.core.findings import CappedFindings, Finding, error, warning

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


def _records(
    header: tuple[str, ...], rows: Iterable[SheetRow], columns: dict[str, str]
) -> Iterator[tuple[int, dict[str, CellValue]]]:
    index = {canon: header.index(head) for canon, head in columns.items()}
    for row in rows:
        vals = row.values
        yield row.number, {canon: (vals[i] if i < len(vals) else None) for canon, i in index.items()}


@dataclass(frozen=True)
class Sheet:
    """A sheet read in full: header cells, data rows, and what the file format itself revealed."""

    path: Path
    name: str | None  # worksheet title for .xlsx, None for .csv
    header: tuple[str, ...]
    rows: list[SheetRow]
    findings: list[Finding] = field(default_factory=list)
    encoding: str | None = None  # .csv only
    merges: tuple[str, ...] = ()  # .xlsx merged ranges (`E30:E33`); covered cells read as the range's value

    def records(self, columns: dict[str, str]) -> Iterator[tuple[int, dict[str, CellValue]]]:
        """Rows as `(number, {canonical column: value})`; `columns` maps canonical -> header cell."""
        return _records(self.header, self.rows, columns)


@dataclass(frozen=True)
class SheetStream:
    """A sheet read one row at a time (`open_sheet`): the header at once, the rows as they are
    parsed. `findings` is complete only once `rows` is exhausted (hidden rows, merged ranges and
    unnamed columns are only known at the end of the file)."""

    path: Path
    name: str | None
    header: tuple[str, ...]
    rows: Iterator[SheetRow]
    findings: list[Finding]
    encoding: str | None = None
    merges: tuple[str, ...] = ()

    def records(self, columns: dict[str, str]) -> Iterator[tuple[int, dict[str, CellValue]]]:
        """`Sheet.records`, streamed."""
        return _records(self.header, self.rows, columns)


# openpyxl is imported where a cell is read or named, not with this module: it takes about 0.1 s,
# which a run that reads no .xlsx (a warm `check-leakage`, the sheets' keys remembered) never pays.


def _column_letter(col: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(col)


def _label(path: Path) -> str:
    return path.name


@contextmanager
def open_sheet(path: Path, header_only: bool = False, cap: CappedFindings | None = None) -> Iterator[SheetStream]:
    """A .xlsx or .csv metadata sheet to read row by row, so that a sheet of any size is never
    held whole (.csv files are small and read at once); raises `SheetError` when it cannot be read
    at all, also while its rows are read. `header_only` reads no rows; `cap` bounds how many of
    the file's own findings are kept (a column of dates), as it bounds the rows' findings."""
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        with _open_xlsx(path, header_only, cap) as stream:
            yield stream
        return
    if suffix in CSV_SUFFIXES:
        sheet = _read_csv(path)
        kept = sheet.findings if cap is None else cap.keep(sheet.findings)
        yield SheetStream(sheet.path, None, sheet.header, iter(() if header_only else sheet.rows), kept, sheet.encoding)
        return
    raise SheetError(f"{path}: not a sheet (expected .xlsx or .csv)")


def read_sheet(path: Path, header_only: bool = False) -> Sheet:
    """Read a .xlsx or .csv metadata sheet whole; raise `SheetError` when it cannot be read at all.

    `header_only` stops an .xlsx after its header row (to tell which kind of sheet it is).
    """
    with open_sheet(path, header_only) as stream:
        rows = list(stream.rows)
        return Sheet(stream.path, stream.name, stream.header, rows, stream.findings, stream.encoding, stream.merges)


def find_columns(sheet: Sheet | SheetStream, wanted: dict[str, str]) -> tuple[dict[str, str], list[Finding]]:
    """Map each canonical column to its header cell, matching case and whitespace loosely.

    `wanted` maps canonical names to the header text expected. Raises `SheetError` naming every
    missing column; a header spelled differently (case, spaces) is a `sheet.header` warning.
    """
    by_key: dict[str, str] = {}
    for head in sheet.header:
        by_key.setdefault(_header_key(head), head)
    found: dict[str, str] = {}
    findings: list[Finding] = []
    missing: list[str] = []
    for canon, expected in wanted.items():
        found_head = by_key.get(_header_key(expected))
        if found_head is None:
            missing.append(expected)
            continue
        head = found_head
        found[canon] = head
        if head != expected:
            col = _column_letter(sheet.header.index(head) + 1)
            findings.append(
                warning(
                    "sheet.header",
                    f"column header {head!r} is spelled differently from {expected!r}",
                    file=_label(sheet.path),
                    row=1,
                    column=col,
                    value=head,
                    hint=f"rename it to {expected!r}",
                )
            )
    if missing:
        names = ", ".join(repr(m) for m in missing)
        where = f" (sheet {sheet.name!r})" if sheet.name else ""
        lower = _header_below(sheet, wanted)
        if lower is not None:
            raise SheetError(f"{sheet.path}{where}: the column headers are on row {lower}, below other text "
                             f"(a title?); delete the row(s) above row {lower}")
        raise SheetError(f"{sheet.path}{where}: missing column(s) {names}")
    return found, findings


def _header_below(sheet: Sheet | SheetStream, wanted: dict[str, str], look: int = 50) -> int | None:
    """The number of a row among the first `look` data rows that holds every wanted header."""
    keys = {_header_key(v) for v in wanted.values()}
    for row in islice(sheet.rows, look):
        if keys <= {_header_key(str(v)) for v in row.values if v is not None}:
            return row.number
    return None


def _header_key(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").split()).casefold()


# --- .xlsx ---------------------------------------------------------------------------------

_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_ROW, _C, _V, _F, _IS, _T, _R = (f"{_NS}{t}" for t in ("row", "c", "v", "f", "is", "t", "r"))
_COL = f"{_NS}col"


@cache
def _workbook_reader() -> Any:
    """openpyxl's workbook reader, stopped before it builds sheet objects (the class is made on first use).

    openpyxl's read-only sheet objects parse the whole sheet once just to learn its size when
    the file has no `<dimension>` (files written by openpyxl or pandas); we stream each sheet
    exactly once ourselves, seeing formulas with their cached values, error cells and dates.
    """
    from openpyxl.reader.excel import ExcelReader
    from openpyxl.styles.stylesheet import apply_stylesheet

    class _WorkbookReader(ExcelReader):
        def open(self) -> list[tuple[str, str, str]]:
            self.read_manifest()
            self.read_strings()
            self.read_workbook()
            apply_stylesheet(self.archive, self.wb)
            return [
                (sheet.name, sheet.state or "visible", rel.target)
                for sheet, rel in self.parser.find_sheets()
                if rel.target in self.valid_files and "chartsheet" not in rel.Type
            ]

    return _WorkbookReader


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a compound file: legacy .xls, or an encrypted .xlsx


def _refuse_compound_file(path: Path) -> None:
    """Excel saves a password-protected workbook as an encrypted compound file, not a zip."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(_OLE2)) != _OLE2:
                return
            head = fh.read(64 << 20)  # the stream names sit in a directory sector anywhere in the file
    except OSError as exc:
        raise SheetError(f"{path}: cannot read ({_reason(exc)})") from exc
    if "EncryptedPackage".encode("utf-16-le") in head or "EncryptionInfo".encode("utf-16-le") in head:
        raise SheetError(f"{path}: the workbook is password-protected; save a copy without a password "
                         "(File > Info > Protect Workbook > Encrypt with Password, clear it)")
    raise SheetError(f"{path}: an old-style .xls workbook, not .xlsx; open it in Excel and save it as .xlsx")


def _unreadable_errors() -> tuple[type[BaseException], ...]:
    from openpyxl.utils.exceptions import InvalidFileException

    return (zipfile.BadZipFile, InvalidFileException, *_UNREADABLE)


_UNREADABLE = (
    KeyError,
    OSError,
    ValueError,
    TypeError,
    IndexError,
    AttributeError,
    EOFError,
    SyntaxError,
    ParseError,
    zlib.error,
)  # openpyxl and zipfile raise many types for a damaged or truncated workbook


def _unreadable(path: Path, exc: BaseException) -> SheetError:
    return SheetError(f"{path}: not a readable .xlsx workbook ({_reason(exc)})")


@contextmanager
def _open_xlsx(path: Path, header_only: bool = False, cap: CappedFindings | None = None) -> Iterator[SheetStream]:
    reader: Any = None
    _refuse_compound_file(path)
    try:
        try:
            reader = _workbook_reader()(str(path), read_only=True)
            sheets = reader.open()
            if not sheets:
                raise SheetError(f"{path}: workbook has no worksheet")
            stream = _stream_workbook(path, reader, sheets, header_only, cap)
        except _unreadable_errors() as exc:
            raise _unreadable(path, exc) from exc
        yield stream
    finally:
        if reader is not None and getattr(reader, "archive", None) is not None:
            reader.archive.close()


_MERGE_REF = re.compile(rb'<(?:[A-Za-z_][\w.-]*:)?mergeCell\b[^>]*?\sref="([^"]*)"')


def _merge_refs(archive: zipfile.ZipFile, target: str) -> list[str]:
    """The merged ranges of a worksheet. They come after every row in the file, and covered cells
    are read as the range's value while the rows stream past, so the ranges are found first by
    a quick scan of the bytes (no XML parsing)."""
    refs: list[str] = []
    tail = b""
    with archive.open(target) as src:
        while chunk := src.read(1 << 20):
            data = tail + chunk
            cut = data.rfind(b"<")  # a tag cut by the chunk's end is scanned with the next chunk
            cut = cut if cut > len(data) - 4096 else len(data)
            refs += [m.decode("utf-8", "replace") for m in _MERGE_REF.findall(data, 0, cut)]
            tail = data[cut:]
    refs += [m.decode("utf-8", "replace") for m in _MERGE_REF.findall(tail)]
    return refs


def _stream_workbook(
    path: Path,
    reader: Any,
    sheets: list[tuple[str, str, str]],
    header_only: bool = False,
    cap: CappedFindings | None = None,
) -> SheetStream:
    label = _label(path)
    findings: list[Finding] = []
    visible = [s for s in sheets if s[1] == "visible"]
    title, _, target = (visible or sheets)[0]
    for name, state, _t in sheets:
        if name == title:
            continue
        extra = "" if state == "visible" else f" ({state})"
        findings.append(
            warning(
                "sheet.extra-sheet",
                f"workbook has another sheet {name!r}{extra}; only {title!r} is read",
                file=label,
                value=name,
                hint="move its rows into the data sheet or delete it",
            )
        )
    wb = reader.wb
    date_formats, timedelta_formats = wb._date_formats, wb._timedelta_formats  # openpyxl's own
    stream = _SheetStream(reader.shared_strings, date_formats, timedelta_formats, wb.epoch, label, findings, cap)
    stream.merges = [] if header_only else _merge_refs(reader.archive, target)
    rows = stream.rows(reader.archive.open(target))
    header = stream.header(rows)
    if header is None:
        raise SheetError(f"{path}: sheet {title!r} is empty (no header row)")
    data = iter(()) if header_only else _guarded(path, _finish(stream, rows, header))
    return SheetStream(path, title, header, data, findings, merges=tuple(stream.merges))


def _guarded(path: Path, rows: Iterator[SheetRow]) -> Iterator[SheetRow]:
    """`rows`, with a workbook that turns out damaged further down a `SheetError` too."""
    try:
        yield from rows
    except _unreadable_errors() as exc:
        raise _unreadable(path, exc) from exc


def _finish(stream: _SheetStream, rows: Iterator[SheetRow], header: tuple[str, ...]) -> Iterator[SheetRow]:
    """The data rows with merged ranges filled in; at the end, the findings only the whole file
    shows (hidden rows and columns, merged ranges, unnamed columns), columns named by header."""
    merged = _MergeFill(stream.merges)
    unnamed = _Unnamed(header, len(header))
    for row in rows:
        row = merged.fill(row)
        unnamed.see(row)
        yield row
    found: list[Finding] = []
    _hidden(stream.hidden_rows, stream.hidden_cols, stream.label, found)
    found += merged.findings(stream.label) + unnamed.findings(stream.label)
    for finding in found:
        stream.note(finding)
    stream.findings[:] = _named(stream.findings, header)


def _named(findings: list[Finding], header: tuple[str, ...]) -> list[Finding]:
    """Findings located by column letter, renamed to the column's header where it has one."""
    names = {_column_letter(i + 1): h.strip() for i, h in enumerate(header) if h.strip()}
    return [f.model_copy(update={"column": names[f.column]}) if f.column in names else f for f in findings]


class _SheetStream:
    """One pass over a worksheet's XML: rows of plain values, plus what Excel hides in them."""

    def __init__(
        self,
        shared: list[Any],
        date_styles: set[int],
        timedelta_styles: set[int],
        epoch: Any,
        label: str,
        findings: list[Finding],
        cap: CappedFindings | None = None,
    ) -> None:
        self.shared = shared
        self.date_styles = date_styles
        self.timedelta_styles = timedelta_styles
        self.epoch = epoch
        self.label = label
        self.findings = findings
        self.cap = cap
        self.hidden_rows: list[int] = []
        self.hidden_cols: list[tuple[int, int]] = []
        self.merges: list[str] = []

    def note(self, finding: Finding) -> None:
        """Keep a finding of the file (through the cap, when there is one)."""
        if self.cap is None or self.cap.admit(finding):
            self.findings.append(finding)

    def rows(self, src: Any) -> Iterator[SheetRow]:
        """Every `<row>` of the worksheet, header included, parsed as it is reached."""
        number = 0
        for _event, el in iterparse(src, events=("end",)):
            tag = el.tag
            if tag == _ROW:
                r = el.get("r")
                number = int(float(r)) if r else number + 1
                if el.get("hidden") in ("1", "true"):
                    self.hidden_rows.append(number)
                values = self._row(el, number)
                el.clear()
                yield SheetRow(number, tuple(values))
            elif tag == _COL:
                if el.get("hidden") in ("1", "true"):
                    self.hidden_cols.append((int(el.get("min", "1")), int(el.get("max", el.get("min", "1")))))
        src.close()

    def header(self, rows: Iterator[SheetRow]) -> tuple[str, ...] | None:
        """The first row with a value, taken from `rows` (None when there is none)."""
        for row in rows:
            if not row.values:
                continue
            if row.number != 1:
                self.note(
                    warning(
                        "sheet.header-row",
                        f"the header is on row {row.number}, not row 1",
                        file=self.label,
                        row=row.number,
                        hint="delete the rows above the header",
                    )
                )
            return tuple("" if v is None else str(v) for v in row.values)
        return None

    def _row(self, el: Any, number: int) -> list[CellValue]:
        values: list[CellValue] = []
        col = 0
        for c in el:
            if c.tag != _C:
                continue
            ref = c.get("r")
            col = _column_of(ref) if ref else col + 1
            value = self._cell(c, number, col)
            if value is None:
                continue
            while len(values) < col - 1:
                values.append(None)
            values.append(value)
        return values

    def _cell(self, c: Any, number: int, col: int) -> CellValue:
        kind = c.get("t", "n")
        formula = c.find(_F)
        if formula is not None:
            return self._formula(c, formula, kind, number, col)
        if kind == "s":
            v = c.findtext(_V)
            return str(self.shared[int(v)]) if v else None
        if kind == "inlineStr":
            node = c.find(_IS)
            return None if node is None else _inline_text(node)
        v = c.findtext(_V)
        if not v:
            return None
        if kind == "n":
            style = int(c.get("s", "0"))
            try:
                num = _number(v)
            except ValueError:
                return self._error(f"a number {v!r} that is not a number", v, number, col)
            if style in self.date_styles:
                from openpyxl.utils.datetime import from_excel

                try:
                    return self._date(
                        from_excel(num, self.epoch, timedelta=style in self.timedelta_styles), number, col
                    )
                except (OverflowError, ValueError):
                    return self._error(f"a date serial number {v} outside the calendar", v, number, col)
            return num
        if kind == "str":
            return str(v)
        if kind == "b":
            return v.strip() in ("1", "true")
        if kind == "e":
            return self._error(f"the Excel error {v}", v, number, col)
        if kind == "d":
            from openpyxl.utils.datetime import from_ISO8601

            try:
                return self._date(from_ISO8601(v), number, col)  # type: ignore[no-untyped-call]
            except ValueError:
                return self._error(f"a date {v!r} that is not a date", v, number, col)
        return str(v)

    def _formula(self, c: Any, formula: Any, kind: str, number: int, col: int) -> CellValue:
        text = "=" + (formula.text or "")
        if formula.get("t") == "shared" and not formula.text:
            text = f"=(shared formula {formula.get('si')})"
        cached = c.findtext(_V) or None
        letter = _column_letter(col)
        if kind == "e":
            self.note(
                error(
                    "cell.error",
                    f"formula {text} evaluates to the error {cached}",
                    file=self.label,
                    row=number,
                    column=letter,
                    value=text,
                    hint="type the value instead of a formula",
                )
            )
            return None
        value: CellValue = cached
        if cached is not None and kind == "n":
            value = _number(cached)
        elif cached is not None and kind == "b":
            value = cached.strip() in ("1", "true")
        self.note(
            warning(
                "cell.formula",
                f"cell holds the formula {text}; its last computed value {value!r} is used",
                file=self.label,
                row=number,
                column=letter,
                value=text,
                hint="replace the formula by its value",
            )
        )
        return value

    def _error(self, what: str, value: str, number: int, col: int) -> CellValue:
        """Report an error cell; its value is None (never a string that looks like data)."""
        self.note(
            error(
                "cell.error",
                f"cell holds {what}",
                file=self.label,
                row=number,
                column=_column_letter(col),
                value=value,
                hint="type the intended value",
            )
        )
        return None

    def _date(self, value: Any, number: int, col: int) -> str:
        text = _iso(value)
        self.note(
            warning(
                "cell.date",
                f"Excel stored this cell as a date/time ({text}); was it typed as something else?",
                file=self.label,
                row=number,
                column=_column_letter(col),
                value=text,
                hint="format the cell as text and retype the value",
            )
        )
        return text


_COLUMNS: dict[str, int] = {}


def _column_of(ref: str) -> int:
    letters = ref.rstrip("0123456789")
    col = _COLUMNS.get(letters)
    if col is None:
        from openpyxl.utils import column_index_from_string

        col = _COLUMNS[letters] = column_index_from_string(letters)
    return col


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        num = float(text)
        return int(num) if num.is_integer() and abs(num) < 2**53 else num


def _inline_text(node: Any) -> str:
    """Text of an inline string: plain `<t>` or rich-text runs `<r><t>`, phonetic runs skipped."""
    parts = []
    for child in node:
        if child.tag == _T:
            parts.append(child.text or "")
        elif child.tag == _R:
            parts.append(child.findtext(_T) or "")
    return "".join(parts)


def _iso(value: Any) -> str:
    if isinstance(value, datetime) and value.time() == time(0):
        return value.date().isoformat()
    if isinstance(value, (date, datetime, time)):
        return value.isoformat()
    return str(value)


def _hidden(hidden_rows: list[int], hidden_cols: list[tuple[int, int]], label: str, findings: list[Finding]) -> None:
    for number in hidden_rows:
        findings.append(
            warning(
                "sheet.hidden-row",
                f"row {number} is hidden in Excel (it is still validated)",
                file=label,
                row=number,
                hint="unhide it so curators see what is checked",
            )
        )
    for first, last in hidden_cols:
        span = _column_letter(first) + ("" if last == first else f":{_column_letter(last)}")
        findings.append(
            warning(
                "sheet.hidden-column",
                f"column {span} is hidden in Excel (it is still validated)",
                file=label,
                column=_column_letter(first),
                hint="unhide it so curators see what is checked",
            )
        )


class _MergeFill:
    """Merged ranges applied to rows as they stream past: every covered cell gets the value Excel
    shows across the range (its top-left cell's), and each range is reported once at the end."""

    def __init__(self, ranges: list[str]) -> None:
        from openpyxl.utils import range_boundaries

        self.spans: list[tuple[str, int, int, int, int]] = []
        for ref in ranges:
            bounds = range_boundaries(str(ref))
            if None in bounds:  # a whole-row or whole-column range holds no cell values of its own
                continue
            min_col, min_row, max_col, max_row = (int(b) for b in bounds)  # type: ignore[arg-type]
            self.spans.append((ref, min_col, min_row, max_col, max_row))
        self.values: list[CellValue] = [None] * len(self.spans)  # None until the top row is read
        self._pending = sorted(range(len(self.spans)), key=lambda i: self.spans[i][2], reverse=True)
        self._active: list[int] = []

    def fill(self, row: SheetRow) -> SheetRow:
        number = row.number
        while self._pending and self.spans[self._pending[-1]][2] <= number:
            self._active.append(self._pending.pop())
            self._active.sort()  # ranges apply in the order the file lists them
        self._active = [i for i in self._active if self.spans[i][4] >= number]
        if not self._active or number == 1:
            return row
        vals = list(row.values)
        for i in self._active:
            _ref, min_col, min_row, max_col, _max_row = self.spans[i]
            if number == min_row:
                self.values[i] = vals[min_col - 1] if len(vals) >= min_col else None
            while len(vals) < max_col:
                vals.append(None)
            for c in range(min_col, max_col + 1):
                if (number, c) != (min_row, min_col):
                    vals[c - 1] = self.values[i]
        return SheetRow(number, tuple(vals))

    def findings(self, label: str) -> list[Finding]:
        return [
            warning(
                "sheet.merged-cells",
                f"cells {ref} are merged; each covered cell is read as {value!r}",
                file=label,
                row=min_row,
                column=_column_letter(min_col),
                value=str(ref),
                hint="unmerge the cells and fill each one",
            )
            for (ref, min_col, min_row, _c, _r), value in zip(self.spans, self.values, strict=True)
        ]


class _Unnamed:
    """Values in columns that have no header cell, noted as rows stream past, reported once per column."""

    def __init__(self, header: tuple[str, ...], width: int) -> None:
        self.header = header
        self.width = width
        self.seen: dict[int, int] = {}

    def see(self, row: SheetRow) -> None:
        for i, v in enumerate(row.values):
            if v is not None and (i >= self.width or not self.header[i].strip()) and i not in self.seen:
                self.seen[i] = row.number

    def findings(self, label: str) -> list[Finding]:
        return [
            warning(
                "sheet.unnamed-column",
                f"column {_column_letter(i + 1)} has values but no header; it is ignored",
                file=label,
                row=rnum,
                column=_column_letter(i + 1),
                hint="give it a header or move the values into a named column",
            )
            for i, rnum in sorted(self.seen.items())
        ]


def _unnamed(header: tuple[str, ...], rows: list[SheetRow], width: int, label: str, findings: list[Finding]) -> None:
    unnamed = _Unnamed(header, width)
    for row in rows:
        unnamed.see(row)
    findings += unnamed.findings(label)


# --- .csv -----------------------------------------------------------------------------------


def decode_text(path: Path, data: bytes) -> tuple[str, str]:
    """Decode `data` as UTF-8 (with or without BOM), else Latin-1; refuse binary content."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 holds NUL bytes: decided before the binary test
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise SheetError(f"{path}: starts with a UTF-16 mark but is not UTF-16 text") from exc
        if "\x00" in text[:4096] or _looks_binary(text[:4096].encode("utf-8", "replace")):
            raise SheetError(f"{path}: binary content, not a text file")
        return text, "utf-16"
    head = data[:8192]
    if b"\x00" in head or _looks_binary(head):
        raise SheetError(f"{path}: binary content, not a text file")
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise SheetError(f"{path}: starts with a UTF-8 mark but is not UTF-8 (byte {exc.start})") from exc
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
                "sheet.encoding",
                "file is not UTF-8; it was read as Latin-1",
                file=label,
                hint="save it as UTF-8",
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
                        "sheet.header-row",
                        f"the header is on row {number}, not row 1",
                        file=label,
                        row=number,
                        hint="delete the rows above the header",
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
