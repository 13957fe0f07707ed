"""`ctcurate validate` through the command line: exit codes, exact messages, formats, --fix."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from openpyxl.styles import Font
from sheetfactory import REPO, covid_row, write_xlsx

from ctcurate.cli import main
from ctcurate.core.codes import descriptions


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["validate", *args], env=env)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def no_data_env(monkeypatch):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)


# --- inputs that cannot be read: exit 2, one line naming the file --------------------------------


def _one_line_error(result, path: Path) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and str(path) in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def test_truncated_xlsx(tmp_path, repo_metadata, no_data_env):
    bad = tmp_path / "COVID-CT-MetaInfo.xlsx"
    data = (repo_metadata / "COVID-CT-MetaInfo.xlsx").read_bytes()
    bad.write_bytes(data[:5000])
    line = _one_line_error(run("--metadata", str(bad)), bad)
    assert line.startswith(f"error: {bad}: not a readable .xlsx workbook (")


def test_binary_file_named_csv(tmp_path, no_data_env):
    bad = tmp_path / "NonCOVID-CT-MetaInfo.csv"
    bad.write_bytes(bytes(range(256)) * 4)
    line = _one_line_error(run("--metadata", str(tmp_path)), bad)
    assert line == f"error: {bad}: binary content, not a text file"


def test_missing_columns(tmp_path, no_data_env):
    bad = write_xlsx(
        tmp_path / "COVID-CT-MetaInfo.xlsx", [["a.png", "Patient 1", 41]], header=["File name", "Patient ID", "Age"]
    )
    line = _one_line_error(run("--metadata", str(tmp_path)), bad)
    assert line == (
        f"error: {bad} (sheet 'positive_captions'): missing column(s) 'Gender', 'Location', "
        "'Medical history', 'Time', 'Severity', 'Other diseases', 'DOI', 'Captions'"
    )


def test_empty_sheet(tmp_path, no_data_env):
    bad = tmp_path / "NonCOVID-CT-MetaInfo.csv"
    bad.write_text("")
    line = _one_line_error(run("--metadata", str(bad)), bad)
    assert line == f"error: {bad}: empty sheet (no header row)"


def test_missing_paths(tmp_path, no_data_env):
    line = _one_line_error(run("--metadata", str(tmp_path / "none")), tmp_path / "none")
    assert line == f"error: {tmp_path / 'none'}: no such file or folder"
    line = _one_line_error(run("--images", str(tmp_path)), tmp_path)
    assert line == f"error: {tmp_path}: no Images-processed/ folder there"


def test_bad_format_is_a_usage_error():
    assert run("--format", "xml").exit_code == 2


# --- the embedded metadata and the real images -------------------------------------------------


def test_no_arguments_validates_embedded_metadata_without_images(no_data_env):
    result = run()
    assert result.exit_code == 1  # patient 143 has conflicting age and gender
    lines = result.output.splitlines()
    assert (
        lines[-1]
        == "images not checked: pass --images ROOT or set CTCURATE_DATA to the folder holding Images-processed/"
    )
    # the summary comes first, then the details, errors before warnings, each code under one heading
    assert lines[0] == (
        "2 error(s), 384 warning(s); `--fix OUT` would fix 371 of them (in a copy)"
    )
    assert lines[3].startswith("  error        2     -  patient.conflict       one patient ID with conflicting")
    headings = [line for line in lines if line.startswith(("error: ", "warning: "))]
    assert headings[0] == "error: patient.conflict (2)"
    assert all(h.startswith("warning: ") for h in headings[1:])
    assert "warning: doi.inner-whitespace (15, 15 fixed by --fix)" in headings
    at = lines.index("warning: doi.inner-whitespace (15, 15 fixed by --fix)")
    assert "    row 330, 'DOI': DOI has whitespace inside the DOI '10.1016/ S0140-6736(20)30154-9 ' [--fix]" in lines[at:]
    assert max(len(line) for line in lines[:-1]) <= 100  # not a terminal: cut and wrapped at 100 columns
    assert "\033[" not in result.output  # no colour when not on a terminal


def test_quiet_prints_the_summary_only(no_data_env):
    result = run("--quiet")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("2 error(s), 384 warning(s); `--fix OUT` would fix 371")
    assert not any(line.startswith(("error: ", "warning: ")) for line in lines)
    assert len(lines) == 3 + 9 + 1  # headline, blank, header, one row per code, images-not-checked


def test_colour_only_when_asked_and_no_color_is_unset():
    from ctcurate.core.findings import error, warning
    from ctcurate.validation.render import to_text

    found = [warning("cell.whitespace", "trailing space", file="s.csv", row=2), error("file.missing", "no file", file="s.csv", row=3)]
    plain = to_text(found, [], descriptions())
    painted = to_text(found, [], descriptions(), colour=True)
    assert "\033[" not in plain and "\033[1;31merror: file.missing (1)\033[0m" in painted
    assert plain.index("error: file.missing") < plain.index("warning: cell.whitespace")


def test_text_report_on_real_data(real_data):
    result = run("--images", str(real_data))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("85 error(s), 418 warning(s); `--fix OUT` would fix 454 of them")
    at = lines.index("error: file.missing (83, 83 fixed by --fix)")
    assert lines[at + 1: at + 5] == [
        "  COVID-CT-MetaInfo.xlsx:",
        "    row 266, 'File name': no file '2020.03.25.20043166-p17-78' in Images-processed/CT_COVID/ [--fix]",
        "        hint: the file is '2020.03.25.20043166-p17-78.png': write the full name (ctcurate validate",
        "          --fix does)",
    ]


def test_json_has_exactly_findings_and_summary(real_data):
    result = run("--images", str(real_data), "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert list(doc) == ["findings", "summary"]
    assert set(doc["findings"][0]) == {"code", "severity", "file", "row", "column", "value", "message", "hint"}
    assert doc["summary"]["errors"] == 85 and doc["summary"]["images_checked"] is True
    assert doc["summary"]["by_code"]["image.format-mismatch"] == 34


def test_env_var_finds_the_images(real_data):
    result = run("--format", "json", env={"CTCURATE_DATA": str(real_data)})
    assert json.loads(result.output)["summary"]["images_checked"] is True


def test_html_report_is_self_contained_and_escaped(tmp_path, no_data_env):
    meta = tmp_path / "m"
    meta.mkdir()
    write_xlsx(
        meta / "COVID-CT-MetaInfo.xlsx",
        [covid_row("a.png", gender="<b>X</b>"), covid_row("b.png", gender="<script>alert(1)</script>")],
    )
    out = tmp_path / "report.html"
    result = run("--metadata", str(meta), "--format", "html", "--output", str(out))
    assert result.exit_code == 1
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "<b>X</b>" not in page
    assert "&lt;b&gt;X&lt;/b&gt;" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert "gender.invalid" in page and "a gender other than M or F" in page
    assert result.output.splitlines()[0] == f"wrote {out}: 2 error(s), 0 warning(s)"


def test_html_report_filters_and_folds_by_code(tmp_path, no_data_env):
    meta = tmp_path / "m"
    meta.mkdir()
    write_xlsx(meta / "COVID-CT-MetaInfo.xlsx", [covid_row("a.png", gender="X"), covid_row("b.png", age="40+", gender="F ")])
    out = tmp_path / "report.html"
    assert run("--metadata", str(meta), "--format", "html", "--output", str(out)).exit_code == 1
    page = out.read_text(encoding="utf-8")
    # the code table: errors first, with severity and how many --fix fixes
    rows = re.findall(r'<tr class="(error|warning)"><td><input type="checkbox" id="(c-[a-z0-9-]+)" checked', page)
    assert rows[0] == ("error", "c-gender-invalid") and {r[0] for r in rows[1:]} == {"warning"}
    # one foldable section per code (errors open), hidden by its box or its severity's box
    assert '<details class="code sev-error c-gender-invalid" id="gender.invalid" open>' in page
    assert "body:has(#c-gender-invalid:not(:checked)) details.c-gender-invalid{display:none}" in page
    assert 'id="show-error" checked' in page and 'id="show-warning" checked' in page and 'id="hide-fixed"' in page
    # what --fix fixes is marked (the stray space after F), what needs a person is not (40+)
    assert re.search(r'<tr class="fixed"><td>COVID-CT-MetaInfo.xlsx</td><td>3</td><td>Gender</td>.*?<td class="fix">✓</td>', page)
    assert re.search(r'<tr class="manual"><td>COVID-CT-MetaInfo.xlsx</td><td>3</td><td>Age</td>', page)


def test_clean_metadata_exits_0_and_warnings_alone_exit_0(tmp_path, no_data_env):
    meta = tmp_path / "m"
    meta.mkdir()
    write_xlsx(meta / "COVID-CT-MetaInfo.xlsx", [covid_row("a.png", age=41, gender="F", doi="10.1136/bmj.m606")])
    assert run("--metadata", str(meta)).exit_code == 0
    write_xlsx(meta / "COVID-CT-MetaInfo.xlsx", [covid_row("a.png", age="40+", gender="F ")])
    result = run("--metadata", str(meta))
    assert result.exit_code == 0 and "0 error(s), 2 warning(s)" in result.output


# --- --fix ------------------------------------------------------------------------------------


def test_fix_writes_a_normalized_copy_and_leaves_the_input_alone(tmp_path, real_data):
    meta = tmp_path / "metadata"
    shutil.copytree(REPO / "metadata", meta)
    before = {p: digest(p) for p in meta.rglob("*") if p.is_file()}
    out = tmp_path / "fixed"
    result = run("--metadata", str(meta), "--images", str(real_data), "--format", "json", "--fix", str(out))
    assert result.exit_code == 1
    assert {p: digest(p) for p in meta.rglob("*") if p.is_file()} == before
    original = json.loads(result.output.split("\nfixed copy:")[0])
    assert f"fixed copy: {out / 'COVID-CT-MetaInfo.xlsx'} (448 change(s))" in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        f"the fixed copy still has 49 of the 503 finding(s): 2 error(s), 47 warning(s) (see them: ctcurate validate --metadata {out})"
    )

    again = run("--metadata", str(out), "--images", str(real_data), "--format", "json")
    fixed = json.loads(again.output)
    assert len(fixed["findings"]) < len(original["findings"])
    assert fixed["summary"]["by_code"] == {
        "age.not-numeric": 12,
        "image.format-mismatch": 34,
        "patient.conflict": 2,
        "row.stray": 1,
    }
    ws = load_workbook(out / "COVID-CT-MetaInfo.xlsx").active
    assert ws.title == "positive_captions"
    assert ws["A266"].value == "2020.03.25.20043166-p17-78.png"
    assert ws["J330"].value == "10.1016/s0140-6736(20)30154-9"
    assert ws["J2"].value == "10.1101/2020.01.24.919183"
    assert ws["D288"].value == "F"
    assert ws["C238"].value == "40+"  # needs a human: left alone
    assert ws["H3"].value == ws["H2"].value
    assert ws["A351"].value is None and ws["K351"].value == "NTM, nontuberculous mycobacterium. "


def test_fix_keeps_other_sheets_and_styles(tmp_path, no_data_env):
    path = write_xlsx(tmp_path / "in.xlsx", [covid_row("a.png", gender="F ", doi="doi: 10.1136/BMJ.m606")])
    wb = load_workbook(path)
    wb.active["D2"].font = Font(bold=True)
    wb.create_sheet("notes")["A1"] = "keep me"
    wb.save(path)
    before = digest(path)
    out = tmp_path / "out.xlsx"
    result = run("--metadata", str(path), "--fix", str(out))
    assert result.exit_code == 0, result.output
    assert digest(path) == before
    fixed = load_workbook(out)
    assert fixed.sheetnames == ["positive_captions", "notes"] and fixed["notes"]["A1"].value == "keep me"
    ws = fixed["positive_captions"]
    assert ws["D2"].value == "F" and ws["D2"].font.bold
    assert ws["J2"].value == "10.1136/bmj.m606"


def test_fix_csv_keeps_encoding_and_format(tmp_path, no_data_env):
    path = tmp_path / "NonCOVID-CT-MetaInfo.csv"
    path.write_bytes(",image name,patient id\r\n0,S\xe3o.jpg ,p 1\r\n1,b.jpg,p 2\r\n".encode("latin-1"))
    out = tmp_path / "fixed.csv"
    result = run("--metadata", str(path), "--fix", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == ",image name,patient id\r\n0,S\xe3o.jpg,p 1\r\n1,b.jpg,p 2\r\n".encode("latin-1")


def test_fix_refuses_to_overwrite_the_input(tmp_path, no_data_env):
    path = write_xlsx(tmp_path / "in.xlsx", [covid_row("a.png")])
    before = digest(path)
    result = run("--metadata", str(path), "--fix", str(path))
    assert result.exit_code == 2
    assert (
        result.output.strip().splitlines()[-1]
        == f"error: {path}: would overwrite the input; choose another --fix target"
    )
    assert digest(path) == before
    wrong = run("--metadata", str(path), "--fix", str(tmp_path / "out.csv"))
    assert wrong.exit_code == 2 and "the copy must keep the input's format (.xlsx)" in wrong.output


def test_reports_and_fixed_copies_get_ordinary_permissions(tmp_path, no_data_env):
    import os

    mask = os.umask(0o022)
    try:
        path = write_xlsx(tmp_path / "in.xlsx", [covid_row("a.png", gender="F ")])
        report, fixed = tmp_path / "r.json", tmp_path / "out.xlsx"
        assert (
            run("--metadata", str(path), "--format", "json", "--output", str(report), "--fix", str(fixed)).exit_code
            == 0
        )
        assert (report.stat().st_mode & 0o777, fixed.stat().st_mode & 0o777) == (0o644, 0o644)
    finally:
        os.umask(mask)


def test_fix_fills_a_merged_column_range_down(tmp_path, no_data_env):
    path = write_xlsx(
        tmp_path / "in.xlsx",
        [covid_row("a.png", "Patient 7 ", gender="F"), covid_row("b.png", None, gender="F ")],
    )
    wb = load_workbook(path)
    wb.active.merge_cells("B2:B3")
    wb.save(path)
    out = tmp_path / "out.xlsx"
    result = run("--metadata", str(path), "--fix", str(out))
    assert result.exit_code == 0, result.output
    ws = load_workbook(out).active
    assert list(ws.merged_cells.ranges) == []
    assert (ws["B2"].value, ws["B3"].value, ws["D3"].value) == ("Patient 7", "Patient 7", "F")


def test_fix_leaves_a_merge_across_columns(tmp_path, no_data_env):
    path = write_xlsx(tmp_path / "in.xlsx", [covid_row("a.png", "Patient 7", location="Wuhan ")])
    wb = load_workbook(path)
    wb.active.merge_cells("E2:F2")
    wb.save(path)
    out = tmp_path / "out.xlsx"
    assert run("--metadata", str(path), "--fix", str(out)).exit_code == 0
    ws = load_workbook(out).active
    assert [str(r) for r in ws.merged_cells.ranges] == ["E2:F2"] and ws["E2"].value == "Wuhan"


def test_fix_cleans_split_lists(tmp_path, no_data_env):
    meta = tmp_path / "m"
    shutil.copytree(REPO / "metadata", meta)
    train = meta / "Data-split" / "COVID" / "trainCT_COVID.txt"
    original = train.read_text()
    first = original.splitlines()[0]
    train.write_text(f" {first}\n\n{original}")
    out = tmp_path / "fixed"
    result = run("--metadata", str(meta), "--fix", str(out))
    assert result.exit_code == 1  # patient 143
    assert f"fixed copy: {out / 'Data-split/COVID/trainCT_COVID.txt'} (3 change(s))" in result.output
    assert (out / "Data-split/COVID/trainCT_COVID.txt").read_text() == original
    again = run("--metadata", str(out), "--format", "json")
    assert not [
        f
        for f in json.loads(again.output.split("\nimages not checked")[0])["findings"]
        if f["code"].startswith("split.")
    ]


def test_fix_refuses_a_folder_holding_another_datasets_files_unless_forced(tmp_path, no_data_env):
    meta = tmp_path / "m"
    shutil.copytree(REPO / "metadata", meta)
    other = tmp_path / "other"
    other.mkdir()
    (other / "COVID-CT-MetaInfo.xlsx").write_bytes(b"another dataset's sheet")
    result = run("--metadata", str(meta), "--fix", str(other))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: {other}: the folder exists and is not empty; pass --force to write over it")
    assert (other / "COVID-CT-MetaInfo.xlsx").read_bytes() == b"another dataset's sheet"
    assert sorted(p.name for p in other.iterdir()) == ["COVID-CT-MetaInfo.xlsx"]
    forced = run("--metadata", str(meta), "--fix", str(other), "--force")
    assert forced.exit_code == 1  # the repository's sheet has errors; the copy is written
    assert (other / "Data-split" / "COVID" / "trainCT_COVID.txt").is_file()


def test_fix_never_writes_onto_the_input_even_when_forced(tmp_path, no_data_env):
    meta = tmp_path / "m"
    shutil.copytree(REPO / "metadata", meta)
    before = {p: digest(p) for p in meta.rglob("*") if p.is_file()}
    result = run("--metadata", str(meta), "--fix", str(meta), "--force")
    assert result.exit_code == 2
    assert "would overwrite the input; choose another --fix target" in result.output
    assert {p: digest(p) for p in meta.rglob("*") if p.is_file()} == before


def test_a_name_with_a_newline_or_a_right_to_left_mark_stays_on_one_line(tmp_path, no_data_env):
    path = write_xlsx(tmp_path / "in\u202e\nx.xlsx", [covid_row("a\nb.png", age="x\u202eevil", gender="F")])
    result = run("--metadata", str(path))
    lines = result.output.splitlines()
    assert all("\u202e" not in line for line in lines)
    assert any("\\u202e" in line for line in lines)
    # the file and the value are written with their escapes, so no line is broken inside a name
    assert any("in\\u202e\\nx.xlsx" in line for line in lines), lines
    assert not any(line.strip() == "x.xlsx:" for line in lines)
def test_data_is_the_option_and_images_its_older_name(tmp_path):
    """Every command takes the image root as --data; validate also keeps --images."""
    from contribution_helpers import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds")
    runner = CliRunner()
    args = ["validate", "--metadata", str(root / "metadata"), "--format", "json"]
    by_data = runner.invoke(main, [*args, "--data", str(root)])
    by_images = runner.invoke(main, [*args, "--images", str(root)])
    assert by_data.exit_code == by_images.exit_code == 1
    assert by_data.stdout == by_images.stdout
    assert '"images_checked": true' in by_data.stdout
