"""The contribution format: sheet reading, the template round trip, the published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from contribution_helpers import noise_png, write_contribution_sheet
from ctcurate.cli import main
from ctcurate.contribution.source import ALL_COLUMNS, REQUIRED_COLUMNS, open_contribution, read_sheet

REPO = Path(__file__).resolve().parent.parent


def test_published_schema_is_current():
    schema = json.loads((REPO / "schemas" / "contribution-row.schema.json").read_text(encoding="utf-8"))
    assert sorted(schema["required"]) == sorted(REQUIRED_COLUMNS)
    assert set(schema["properties"]) == set(ALL_COLUMNS)


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_template_round_trips_through_the_reader(tmp_path, suffix):
    target = tmp_path / f"template{suffix}"
    result = CliRunner().invoke(main, ["add-contribution", "--template", str(target)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote the contribution template {target}\n"
    rows, findings = read_sheet(target)
    assert rows == []
    assert [f.code for f in findings] == ["sheet.empty"]  # every column known, none missing


def test_template_with_other_suffix_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["add-contribution", "--template", str(tmp_path / "t.txt")])
    assert result.exit_code == 2
    assert "the template must end in .xlsx or .csv" in result.output


def test_reader_maps_header_spelling_and_reports_missing_columns(tmp_path):
    sheet = write_contribution_sheet(tmp_path / "s.csv", [{"file name": "a.png", " LABEL ": "COVID", "Extra": "x"}],
                                     header=["file name", " LABEL ", "Extra"])
    rows, findings = read_sheet(sheet)
    codes = sorted(f.code for f in findings)
    assert codes == ["column.missing"] * 3 + ["column.spelling"] * 2 + ["column.unknown"]
    assert rows[0].values == {"File name": "a.png", "Label": "COVID"}
    assert rows[0].row == 2


def test_folder_with_two_sheets_is_ambiguous(tmp_path):
    write_contribution_sheet(tmp_path / "a.csv", [])
    write_contribution_sheet(tmp_path / "b.xlsx", [])
    noise_png(tmp_path / "x.png", 1)
    with open_contribution(tmp_path) as c:
        assert [f.code for f in c.findings] == ["sheet.ambiguous"]
        assert not c.usable


def test_images_in_subfolders_and_litter(tmp_path):
    noise_png(tmp_path / "imgs" / "x.png", 1)
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".DS_Store").write_text("")
    write_contribution_sheet(tmp_path / "s.csv", [{"File name": "x.png", "Label": "COVID"}])
    with open_contribution(tmp_path) as c:
        assert list(c.images) == ["imgs/x.png"]
        assert [f.code for f in c.findings] == ["contribution.extra-file"]


def test_template_refuses_a_filled_sheet_unless_forced(tmp_path):
    target = tmp_path / "sheet.csv"
    target.write_text("File name,Label\nmine.png,COVID\n")
    result = CliRunner().invoke(main, ["add-contribution", "--template", str(target)])
    assert result.exit_code == 2
    assert result.output == f"error: {target}: the file exists and is not empty; pass --force to write over it\n"
    assert target.read_text() == "File name,Label\nmine.png,COVID\n"
    forced = CliRunner().invoke(main, ["add-contribution", "--template", str(target), "--force"])
    assert forced.exit_code == 0 and "mine.png" not in target.read_text()
    empty = tmp_path / "empty.xlsx"
    empty.touch()
    assert CliRunner().invoke(main, ["add-contribution", "--template", str(empty)]).exit_code == 0
