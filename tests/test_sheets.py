"""Reading sheets: what Excel and CSV files hide is reported, and unreadable files fail in one line."""

from __future__ import annotations

import datetime as dt
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from sheetfactory import COVID_HEADER, covid_row, write_xlsx

from ctcurate.validation.schemas import COVID_COLUMNS
from ctcurate.core.sheets import SheetError, find_columns, read_lines, read_sheet


def codes(sheet):
    return sorted(f.code for f in sheet.findings)


def test_real_covid_sheet_reads_every_row_with_excel_row_numbers(repo_metadata):
    sheet = read_sheet(repo_metadata / "COVID-CT-MetaInfo.xlsx")
    assert sheet.name == "positive_captions"
    assert list(sheet.header) == COVID_HEADER
    assert sheet.rows[0].number == 2 and sheet.rows[-1].number == 351
    assert sheet.findings == []
    by_number = {r.number: r.values for r in sheet.rows}
    assert by_number[266][0] == "2020.03.25.20043166-p17-78"
    assert by_number[2][2] == 41  # an int stays an int, not 41.0 or NaN


def test_real_noncovid_csv_drops_the_pandas_index(repo_metadata):
    sheet = read_sheet(repo_metadata / "NonCOVID-CT-MetaInfo.csv")
    assert sheet.header == ("#index", "image name", "patient id")
    assert sheet.encoding == "utf-8" and sheet.findings == []
    assert sheet.rows[1].values == ("1", "1%0.jpg", "crawled_patient_1")


def test_excel_features_are_reported_not_hidden(tmp_path):
    wb = Workbook()
    ws = wb.active
    ws.title = "data"
    ws.append(COVID_HEADER)
    ws.append(covid_row("a.png", age=41))
    ws.append(covid_row("b.png", age="=C2+1"))  # formula (no cached value: openpyxl does not compute)
    ws.append(covid_row("c.png"))
    ws["C4"] = "#VALUE!"
    ws["C4"].data_type = "e"
    ws.append(covid_row("d.png", time=dt.datetime(2020, 3, 5)))
    ws.append(covid_row("e.png", patient="Patient 5"))
    ws.append([None, None])
    ws.merge_cells("B6:B7")
    ws.row_dimensions[5].hidden = True
    ws.column_dimensions["E"].hidden = True
    other = wb.create_sheet("notes")
    other["A1"] = "scratch"
    hidden = wb.create_sheet("old")
    hidden.sheet_state = "hidden"
    path = tmp_path / "meta.xlsx"
    wb.save(path)

    sheet = read_sheet(path)
    assert sheet.name == "data"
    assert codes(sheet) == [
        "cell.date",
        "cell.error",
        "cell.formula",
        "sheet.extra-sheet",
        "sheet.extra-sheet",
        "sheet.hidden-column",
        "sheet.hidden-row",
        "sheet.merged-cells",
    ]
    by = {f.code: f for f in sheet.findings}
    assert (by["cell.formula"].row, by["cell.formula"].column, by["cell.formula"].value) == (3, "Age", "=C2+1")
    assert (by["cell.error"].row, by["cell.error"].value) == (4, "#VALUE!")
    assert (by["cell.date"].row, by["cell.date"].value) == (5, "2020-03-05")
    assert by["sheet.hidden-row"].row == 5 and by["sheet.hidden-column"].column == "Location"
    assert "'old' (hidden)" in [f for f in sheet.findings if f.value == "old"][0].message
    values = {r.number: r.values + (None,) * 11 for r in sheet.rows}
    assert values[4][2] is None  # the error cell is not a value
    assert values[5][6] == "2020-03-05"
    assert values[7][1] == "Patient 5"  # the merged cell reads as Excel shows it


def test_formula_cached_value_is_used(tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [covid_row("a.png", age=40)])
    # Write a formula with a cached result the way Excel stores it.
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    sheet_xml = members["xl/worksheets/sheet1.xml"].decode()
    sheet_xml = sheet_xml.replace('<c r="C2" t="n"><v>40</v></c>', '<c r="C2"><f>40+1</f><v>41</v></c>')
    assert "<f>40+1</f>" in sheet_xml
    members["xl/worksheets/sheet1.xml"] = sheet_xml.encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    sheet = read_sheet(path)
    assert sheet.rows[0].values[2] == 41
    assert [f.code for f in sheet.findings] == ["cell.formula"]
    assert "41" in sheet.findings[0].message


def test_truncated_xlsx_is_one_line_error(tmp_path, repo_metadata):
    data = (repo_metadata / "COVID-CT-MetaInfo.xlsx").read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SheetError) as info:
        read_sheet(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable .xlsx workbook") and "\n" not in message


def test_binary_csv_is_refused(tmp_path):
    path = tmp_path / "NonCOVID-CT-MetaInfo.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SheetError, match=r"NonCOVID-CT-MetaInfo.csv: binary content, not a text file$"):
        read_sheet(path)


def test_png_named_csv_is_refused(tmp_path, repo_metadata):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(SheetError, match="binary content"):
        read_sheet(path)


@pytest.mark.parametrize(
    ("encoding", "prefix", "expected_encoding", "finding"),
    [
        ("utf-8", b"", "utf-8", []),
        ("utf-8", b"\xef\xbb\xbf", "utf-8-sig", []),
        ("latin-1", b"", "latin-1", ["sheet.encoding"]),
    ],
)
def test_csv_encodings(tmp_path, encoding, prefix, expected_encoding, finding):
    path = tmp_path / "n.csv"
    path.write_bytes(prefix + "image name,patient id\nS\u00e3o.jpg,p\u00e9 1\n".encode(encoding))
    sheet = read_sheet(path)
    assert sheet.encoding == expected_encoding
    assert sheet.header == ("image name", "patient id")  # no BOM glued to the first header
    assert sheet.rows[0].values == ("S\u00e3o.jpg", "p\u00e9 1")
    assert codes(sheet) == finding


def test_empty_sheets_fail(tmp_path):
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("\n\n")
    with pytest.raises(SheetError, match=r"e.csv: empty sheet \(no header row\)$"):
        read_sheet(csv_path)
    wb = Workbook()
    xlsx_path = tmp_path / "e.xlsx"
    wb.save(xlsx_path)
    with pytest.raises(SheetError, match=r"e.xlsx: sheet 'Sheet' is empty \(no header row\)$"):
        read_sheet(xlsx_path)


def test_missing_columns_name_the_file_and_columns(tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [["a.png", "Patient 1"]], header=["File name", "Patient ID"])
    with pytest.raises(SheetError) as info:
        find_columns(read_sheet(path), COVID_COLUMNS)
    assert str(info.value) == (
        f"{path} (sheet 'positive_captions'): missing column(s) 'Age', 'Gender', 'Location', "
        "'Medical history', 'Time', 'Severity', 'Other diseases', 'DOI', 'Captions'"
    )


def test_header_spelling_is_matched_loosely_with_a_warning(tmp_path):
    header = [h.upper() if h == "DOI" else h for h in COVID_HEADER]
    header[0] = " file  name"
    path = write_xlsx(tmp_path / "m.xlsx", [covid_row("a.png")], header=header)
    cols, findings = find_columns(read_sheet(path), COVID_COLUMNS)
    assert cols["file_name"] == " file  name"
    assert [(f.code, f.column) for f in findings] == [("sheet.header", "A")]


def test_unnamed_column_with_values_is_reported(tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [covid_row("a.png") + ["stray"]])
    sheet = read_sheet(path)
    assert [(f.code, f.row, f.column) for f in sheet.findings] == [("sheet.unnamed-column", 2, "L")]


def test_not_a_sheet_suffix(tmp_path):
    path = tmp_path / "m.ods"
    path.write_text("x")
    with pytest.raises(SheetError, match=r"m.ods: not a sheet \(expected .xlsx or .csv\)$"):
        read_sheet(path)


def test_read_lines_keeps_text_and_numbers(tmp_path):
    path = tmp_path / "trainCT_COVID.txt"
    path.write_bytes(b"a.png\r\n\r\n b.png \r\n")
    assert read_lines(path) == [(1, "a.png"), (3, " b.png ")]


def test_roundtrip_through_openpyxl_keeps_values(tmp_path):
    rows = [covid_row("a.png", age=41, gender="F", captions="['x']"), covid_row("b.png", age="40+")]
    path = write_xlsx(tmp_path / "m.xlsx", rows)
    sheet = read_sheet(path)
    assert [list(r.values) + [None] * (11 - len(r.values)) for r in sheet.rows] == rows
    assert load_workbook(path).active.max_row == 3


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.999])
def test_any_truncation_of_the_real_workbook_is_a_sheet_error(tmp_path, repo_metadata, fraction):
    data = (repo_metadata / "COVID-CT-MetaInfo.xlsx").read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SheetError, match=r"^.*cut\.xlsx: not a readable \.xlsx workbook \(.*\)$"):
        read_sheet(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000), st.sampled_from([".xlsx", ".csv"]))
def test_arbitrary_bytes_never_escape_as_other_exceptions(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        read_sheet(path)
    except SheetError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


def test_damaged_member_inside_a_valid_zip(tmp_path, repo_metadata):
    src = repo_metadata / "COVID-CT-MetaInfo.xlsx"
    path = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]  # well-formed zip, broken XML
            zout.writestr(item, data)
    with pytest.raises(SheetError, match="damaged.xlsx: not a readable .xlsx workbook"):
        read_sheet(path)


def test_utf16_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "NonCOVID-CT-MetaInfo.csv"
    path.write_bytes(",image name,patient id\r\n0,S\u00e3o.jpg,p 1\r\n".encode("utf-16"))
    sheet = read_sheet(path)
    assert sheet.encoding == "utf-16"
    assert sheet.header == ("#index", "image name", "patient id")
    assert [r.values[1:] for r in sheet.rows] == [("S\u00e3o.jpg", "p 1")]


def test_a_title_row_above_the_header_names_the_header_row(tmp_path):
    wb = Workbook()
    ws = wb.active
    ws.append(["COVID-CT metadata, exported 2020-04-01"])
    ws.append([])
    ws.append(COVID_HEADER)
    ws.append(["a.png", "Patient 1"])
    wb.save(tmp_path / "t.xlsx")
    sheet = read_sheet(tmp_path / "t.xlsx")
    with pytest.raises(SheetError) as info:
        find_columns(sheet, COVID_COLUMNS)
    assert str(info.value) == (f"{tmp_path / 't.xlsx'} (sheet 'Sheet'): the column headers are on row 3, below other "
                               "text (a title?); delete the row(s) above row 3")


def test_a_password_protected_workbook_says_so(tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent / "data" / "password-protected.xlsx"  # made with msoffcrypto-tool
    with pytest.raises(SheetError, match=r"password-protected.xlsx: the workbook is password-protected; save a copy"):
        read_sheet(fixture)


# --- streaming ----------------------------------------------------------------------------------


def _merged_book(path):
    wb = Workbook()
    ws = wb.active
    ws.append(COVID_HEADER)
    for i in range(2, 8):
        ws.append(covid_row(f"p{i}.png", f"Patient {i}", location="Wuhan" if i == 3 else None))
    ws.merge_cells("E3:E5")
    ws.merge_cells("A6:B6")
    ws.row_dimensions[7].hidden = True
    wb.save(path)
    return path


def test_open_sheet_streams_the_rows_read_sheet_reads_whole(tmp_path):
    from ctcurate.core.sheets import open_sheet

    path = _merged_book(tmp_path / "m.xlsx")
    whole = read_sheet(path)
    with open_sheet(path) as stream:
        assert stream.header == whole.header and stream.merges == ("E3:E5", "A6:B6")
        first = next(stream.rows)
        assert first.number == 2 and stream.findings == []  # the file's own findings come at its end
        rows = [first, *stream.rows]
        assert rows == whole.rows and stream.findings == whole.findings
    values = {r.number: r.values for r in rows}
    assert [values[n][4] for n in (3, 4, 5)] == ["Wuhan"] * 3 and values[6][:2] == ("p6.png", "p6.png")
    assert [f.code for f in whole.findings] == ["sheet.hidden-row", "sheet.merged-cells", "sheet.merged-cells"]


def test_a_workbook_damaged_below_its_first_rows_fails_while_streaming_in_one_line(tmp_path):
    from ctcurate.core.sheets import open_sheet

    good = tmp_path / "good.xlsx"
    write_xlsx(good, [covid_row(f"p{i}.png", f"Patient {i}", captions="x" * 200) for i in range(3000)])
    bad = tmp_path / "bad.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[: len(data) // 2] if item.filename.endswith("sheet1.xml") else data)
    with open_sheet(bad) as stream:
        assert next(stream.rows).number == 2  # the start of the sheet reads fine
        with pytest.raises(SheetError, match=r"bad.xlsx: not a readable .xlsx workbook \("):
            list(stream.rows)
    with pytest.raises(SheetError, match=r"bad.xlsx: not a readable .xlsx workbook \("):
        read_sheet(bad)
