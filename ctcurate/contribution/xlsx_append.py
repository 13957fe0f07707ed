"""Appending rows to the first worksheet of an .xlsx without rewriting anything else in it.

Owns the surgical edit: new `<row>` elements (inline strings, the style of a template row) go in
before `</sheetData>` and the `<dimension>` grows; every other part of the package (other sheets,
shared strings, styles, printer settings, workbook properties) is copied byte for byte, with its
own compression and time stamp. A load-and-save through a spreadsheet library would rebuild every
part and drop what it does not model. Imports nothing from ctcurate.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections.abc import Mapping, Sequence
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_ROW_NUMBER = re.compile(r'<row\b[^>]*?\sr="(\d+)"')
_DIMENSION = re.compile(r'<dimension\s+ref="([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?"\s*/>')
_CELL = re.compile(r'<c\b([^>]*?)\sr="([A-Z]+)\d+"([^>]*?)(/?)>')
_STYLE = re.compile(r'\ss="(\d+)"')
# Characters XML 1.0 cannot hold at all (a cell with them would make the file unreadable).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

Cell = str | int | float | None


class UnsupportedWorkbook(Exception):
    """The package is not laid out as this module expects (e.g. prefixed SpreadsheetML)."""


def column_letter(index: int) -> str:
    """1 -> A, 27 -> AA."""
    out = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def _column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def first_sheet_part(zf: zipfile.ZipFile) -> str:
    """The package path of the workbook's first worksheet (`xl/worksheets/sheet1.xml` usually)."""
    try:
        workbook = ET.fromstring(zf.read("xl/workbook.xml"))
        rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ET.ParseError) as exc:
        raise UnsupportedWorkbook(f"no readable workbook part: {exc}") from exc
    sheet = workbook.find(f"{{{_MAIN}}}sheets/{{{_MAIN}}}sheet")
    if sheet is None:
        raise UnsupportedWorkbook("the workbook lists no sheets")
    rid = sheet.get(f"{{{_REL}}}id")
    for rel in rels.findall(f"{{{_PKG_REL}}}Relationship"):
        if rel.get("Id") == rid:
            target = rel.get("Target", "")
            path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
            if path in zf.namelist():
                return path
    raise UnsupportedWorkbook("the first sheet's part is missing")


def _cell_xml(ref: str, value: Cell, style: str | None) -> str:
    s = f' s="{style}"' if style else ""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int | float):
        return f'<c r="{ref}"{s}><v>{value!r}</v></c>'
    text = _NOT_XML.sub("", str(value))
    space = ' xml:space="preserve"' if text != text.strip() or "\n" in text else ""
    return f'<c r="{ref}"{s} t="inlineStr"><is><t{space}>{escape(text)}</t></is></c>'


def _row_styles(xml: str, row: int | None) -> dict[int, str]:
    """Column index -> style id of the cells of `row` (empty when the row or its styles are absent)."""
    if row is None:
        return {}
    m = re.search(rf'<row\b[^>]*?\sr="{row}"[^>]*?(?:/>|>(.*?)</row>)', xml, re.DOTALL)
    if not m or not m.group(1):
        return {}
    out = {}
    for cm in _CELL.finditer(m.group(1)):
        style = _STYLE.search(cm.group(1) + cm.group(3))
        if style and style.group(1) != "0":
            out[_column_index(cm.group(2))] = style.group(1)
    return out


def append_rows(data: bytes, rows: Sequence[Mapping[int, Cell]], style_row: int | None = None) -> bytes:
    """The package `data` with `rows` ({column index: value}, empty cells left out) appended below the
    first worksheet's last row; new cells take the style of the same column in `style_row`."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsupportedWorkbook(f"not a zip package: {exc}") from exc
    with zf:
        part = first_sheet_part(zf)
        xml = zf.read(part).decode("utf-8")
        if "</sheetData>" not in xml and "<sheetData/>" not in xml:
            raise UnsupportedWorkbook(f"{part}: no <sheetData> element in the default namespace")
        last = max((int(n) for n in _ROW_NUMBER.findall(xml)), default=0)
        styles = _row_styles(xml, style_row)
        new_rows = []
        max_col = 0
        for i, cells in enumerate(rows, start=last + 1):
            parts = []
            for col in sorted(c for c, v in cells.items() if v is not None and v != ""):
                parts.append(_cell_xml(f"{column_letter(col)}{i}", cells[col], styles.get(col)))
                max_col = max(max_col, col)
            new_rows.append(f'<row r="{i}">{"".join(parts)}</row>')
        block = "".join(new_rows)
        if "</sheetData>" in xml:
            head, _, tail = xml.rpartition("</sheetData>")
            xml = head + block + "</sheetData>" + tail
        else:
            xml = xml.replace("<sheetData/>", f"<sheetData>{block}</sheetData>", 1)
        new_last = last + len(rows)
        m = _DIMENSION.search(xml)
        if m and rows:
            c0, r0 = m.group(1), m.group(2)
            c1 = m.group(3) or c0
            c1 = column_letter(max(_column_index(c1), max_col))
            xml = xml[: m.start()] + f'<dimension ref="{c0}{r0}:{c1}{max(new_last, int(m.group(4) or r0))}"/>' + xml[m.end():]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in zf.infolist():
                dst.writestr(info, xml.encode("utf-8") if info.filename == part else zf.read(info.filename))
        return out.getvalue()
