"""Surgical row appends to .xlsx packages."""

from __future__ import annotations

import io
import zipfile

import openpyxl
import pytest
from openpyxl.styles import Font

from ctcurate.contribution.xlsx_append import UnsupportedWorkbook, append_rows, column_letter


def _book(rows, second_sheet=True) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    if second_sheet:
        wb.create_sheet("other")["A1"] = "untouched"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_column_letters():
    assert [column_letter(i) for i in (1, 11, 26, 27, 52, 703)] == ["A", "K", "Z", "AA", "AZ", "AAA"]


def test_rows_land_below_the_last_row_with_the_template_style():
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["name", "n"])
    ws.append(["a", 1])
    ws["A2"].font = Font(italic=True)
    buf = io.BytesIO()
    wb.save(buf)
    out = append_rows(buf.getvalue(), [{1: "b", 2: 2}, {2: 3.5}], style_row=2)
    ws2 = openpyxl.load_workbook(io.BytesIO(out)).active
    assert [[c.value for c in r] for r in ws2.iter_rows()] == [["name", "n"], ["a", 1], ["b", 2], [None, 3.5]]
    assert ws2["A3"].font.i is True and ws2["B3"].data_type == "n"
    assert ws2.dimensions == "A1:B4"


def test_empty_sheet_and_other_sheets():
    out = append_rows(_book([]), [{1: "x"}])
    wb = openpyxl.load_workbook(io.BytesIO(out))
    assert wb.active["A1"].value == "x"
    assert wb["other"]["A1"].value == "untouched"


def test_not_a_workbook():
    with pytest.raises(UnsupportedWorkbook):
        append_rows(b"not a zip", [{1: "x"}])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(UnsupportedWorkbook):
        append_rows(buf.getvalue(), [{1: "x"}])
