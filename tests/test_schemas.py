"""Row models: what each column accepts, how cells are normalized, and the row-level checks."""

from __future__ import annotations

import ast
import json
from collections import Counter

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sheetfactory import REPO

from ctcurate.cli import main
from ctcurate.validation.schemas import (
    COVID_COLUMNS,
    SCHEMA_MODELS,
    CovidRow,
    check_covid_rows,
    check_noncovid_rows,
    clean_text,
    json_schemas,
    parse_captions,
)
from ctcurate.core.sheets import find_columns, read_sheet


def rec(number, file_name="a.png", patient="Patient 1", **cells):
    return number, {"file_name": file_name, "patient_id": patient} | cells


def one(**cells):
    models, findings = check_covid_rows([rec(2, **cells)], file="m.xlsx")
    return (models[0] if models else None), findings


def test_clean_text_strips_nbsp_and_invisible_characters():
    assert clean_text("\u00a0Wuhan,\u00a0China \u200b") == "Wuhan, China"
    assert clean_text("   ") is None and clean_text(None) is None and clean_text(7) == "7"


@pytest.mark.parametrize(
    ("raw", "age", "text", "codes"),
    [
        (41, 41, None, []),
        (41.0, 41, None, []),
        ("41", 41, None, []),
        (" 41 ", 41, None, ["cell.whitespace"]),
        ("40+", None, "40+", ["age.not-numeric"]),
        ("Young Child", None, "Young Child", ["age.not-numeric"]),
        (0.5, None, "0.5", ["age.not-numeric"]),
        (None, None, None, []),
    ],
)
def test_age(raw, age, text, codes):
    model, findings = one(age=raw)
    assert (model.age, model.age_text) == (age, text)
    assert [f.code for f in findings] == codes
    assert model.raw["Age"] == raw  # the raw value stays beside the clean one


def test_age_out_of_range_is_an_error():
    model, findings = one(age=150)
    assert model is None
    assert [(f.code, f.severity.value, f.row, f.column, f.value) for f in findings] == [
        ("age.out-of-range", "error", 2, "Age", "150")
    ]


@pytest.mark.parametrize(
    ("raw", "gender", "codes"),
    [
        ("M", "M", []),
        ("F ", "F", ["cell.whitespace"]),
        ("f", "F", ["gender.nonstandard"]),
        ("female", "F", ["gender.nonstandard"]),
        ("\u00a0M", "M", ["cell.whitespace"]),
        (None, None, []),
    ],
)
def test_gender(raw, gender, codes):
    model, findings = one(gender=raw)
    assert model.gender == gender
    assert [f.code for f in findings] == codes


def test_invalid_gender_is_an_error_with_a_hint():
    model, findings = one(gender="X")
    assert model is None
    (f,) = findings
    assert (f.code, f.column, f.value, f.hint) == (
        "gender.invalid",
        "Gender",
        "X",
        "write M or F, or leave it empty when unknown",
    )
    assert f.message == "gender 'X' is not M or F"


def test_captions_are_parsed_safely():
    assert parse_captions("['one ', 'two']") == (["one", "two"], False)
    assert parse_captions("plain caption ") == (["plain caption"], False)
    # A quote inside the caption ends the literal early: read the one caption inside, flag it.
    assert parse_captions("['the patient's scan']") == (["the patient's scan"], True)
    # Never evaluated: a call is not a literal.
    assert parse_captions("[__import__('os').system('echo hacked')]") == (
        ["[__import__('os').system('echo hacked')]"],
        True,
    )
    assert parse_captions("[" * 5000) == (["[" * 5000], True)
    model, findings = one(captions="['the patient's scan']")
    assert model.captions == ["the patient's scan"]
    assert [f.code for f in findings] == ["captions.malformed"]


def test_required_fields():
    models, findings = check_covid_rows([rec(2, file_name=None), rec(3, patient="  ")], file="m.xlsx")
    assert models == []
    assert [(f.code, f.row, f.column) for f in findings] == [
        ("field.required", 2, "File name"),
        ("field.required", 3, "Patient ID"),
    ]


def test_same_as_above_is_resolved_from_the_row_above_with_a_warning():
    models, findings = check_covid_rows(
        [
            rec(2, severity="severe"),
            rec(3, "b.png", severity="same as above"),
            rec(4, "c.png", severity=" Same as above "),
        ],
        file="m.xlsx",
    )
    assert [m.severity for m in models] == ["severe", "severe", "severe"]
    assert [m.raw["Severity"] for m in models] == ["severe", "same as above", " Same as above "]
    assert [(f.code, f.severity.value, f.row) for f in findings] == [
        ("cell.same-as-above", "warning", 3),
        ("cell.same-as-above", "warning", 4),
    ]


def test_same_as_above_with_nothing_above_is_an_error():
    models, findings = check_covid_rows([rec(2, location="same as above")], file="m.xlsx")
    assert models[0].location is None
    assert [(f.code, f.severity.value) for f in findings] == [("cell.same-as-above", "error")]


def test_empty_stray_and_duplicate_rows():
    records = [
        rec(2, file_name="a.png"),
        (3, {"file_name": None, "patient_id": None}),
        rec(4, file_name="b.png"),
        rec(5, file_name="b.png"),
        rec(6, file_name="a.png", patient="Patient 2"),
        (7, {"file_name": None, "patient_id": None, "captions": "NTM, nontuberculous mycobacterium."}),
        (8, {"file_name": None, "patient_id": None}),
    ]
    _, findings = check_covid_rows(records, file="m.xlsx")
    assert [(f.code, f.row) for f in findings] == [
        ("row.empty", 3),
        ("row.duplicate", 5),
        ("file.duplicate", 6),
        ("row.stray", 7),
    ]  # a trailing empty row is not reported


def test_patient_conflict_names_every_value_and_row():
    records = [
        rec(2, patient="Patient 143", age=73, gender="F"),
        rec(3, file_name="b.png", patient="Patient 143", age=76, gender="M"),
        rec(4, file_name="c.png", patient="Patient 143", age=None, gender="F"),
    ]
    _, findings = check_covid_rows(records, file="m.xlsx")
    assert [(f.code, f.column, f.row) for f in findings] == [
        ("patient.conflict", "Age", 3),
        ("patient.conflict", "Gender", 3),
    ]
    assert findings[0].message == "Patient 143 has conflicting age values: 73 (rows 2); 76 (rows 3)"


def test_doi_findings_come_from_the_doi_module():
    _, findings = check_covid_rows([rec(2, file_name="2020.02.10.20021584-p6-52%0.png")], file="m.xlsx")
    assert [(f.code, f.hint) for f in findings] == [("doi.derivable", "set the DOI to 10.1101/2020.02.10.20021584")]
    model, findings = one(doi="10.1016/ S0140-6736(20)30154-9 ")
    assert model.doi == "10.1016/s0140-6736(20)30154-9"
    assert sorted(f.code for f in findings) == ["doi.inner-whitespace", "doi.whitespace"]


def test_noncovid_rows():
    models, findings = check_noncovid_rows(
        [
            (2, {"image_name": "0.jpg", "patient_id": "crawled_patient_0"}),
            (3, {"image_name": "1.jpg ", "patient_id": None}),
            (4, {"image_name": "0.jpg", "patient_id": "crawled_patient_9"}),
        ],
        file="n.csv",
    )
    assert [m.image_name for m in models] == ["0.jpg", "0.jpg"]
    assert [(f.code, f.row, f.column) for f in findings] == [
        ("cell.whitespace", 3, "image name"),
        ("field.required", 3, "patient id"),
        ("file.duplicate", 4, "image name"),
    ]


def test_real_sheet_row_findings(repo_metadata):
    sheet = read_sheet(repo_metadata / "COVID-CT-MetaInfo.xlsx")
    cols, _ = find_columns(sheet, COVID_COLUMNS)
    models, findings = check_covid_rows(sheet.records(cols), file=sheet.path.name)
    assert len(models) == 349
    by_row = {m.row: m for m in models}
    assert (by_row[238].age, by_row[238].age_text) == (None, "40+")
    assert by_row[176].age_text == "Young Child"
    assert by_row[288].gender == "F" and by_row[288].raw["Gender"] == "F "
    assert by_row[290].patient_id == "Patient 180"
    assert by_row[3].severity == by_row[2].severity and by_row[3].raw["Severity"] == "same as above"
    at = Counter((f.code, f.row) for f in findings)
    assert at[("cell.same-as-above", 3)] == at[("cell.same-as-above", 4)] == at[("cell.same-as-above", 5)] == 1
    assert {f.row for f in findings if f.code == "age.not-numeric"} == {
        176,
        177,
        178,
        179,
        180,
        181,
        238,
        239,
        240,
        241,
        242,
        243,
    }
    assert {f.row for f in findings if f.code == "cell.whitespace" and f.column == "Gender"} == (
        {288, 289, 290, 300, 301, 302, 303, 304, 305, 312, 313, 314, 315, 316} | set(range(291, 300))
    )
    assert [f.row for f in findings if f.code == "row.stray"] == [351]
    conflict = [f for f in findings if f.code == "patient.conflict"]
    assert [(f.value, f.column) for f in conflict] == [("Patient 143", "Age"), ("Patient 143", "Gender")]


# --- JSON Schema ------------------------------------------------------------------------------


def test_every_field_documents_what_it_accepts():
    for name, model in SCHEMA_MODELS.items():
        schema = model.model_json_schema(by_alias=True)
        for prop, spec in schema["properties"].items():
            if name != "finding":
                assert spec.get("description"), f"{name}.{prop} has no description"


def test_covid_schema_uses_sheet_headers_and_accepts_raw_ages():
    schema = CovidRow.model_json_schema(by_alias=True)
    assert set(COVID_COLUMNS.values()) <= set(schema["properties"])
    assert {"type": "string"} in schema["properties"]["Age"]["anyOf"]


def test_json_schemas_are_deterministic():
    first, second = json_schemas(), json_schemas()
    assert first == second
    for text in first.values():
        assert json.loads(text) and text.endswith("\n")


def test_checked_in_schemas_are_current():
    """Fails when a model changed without `ctcurate schema` being rerun."""
    expected = json_schemas()
    folder = REPO / "schemas"
    present = {p.name for p in folder.glob("*.schema.json")}
    assert present == set(expected), "run `ctcurate schema` and commit schemas/"
    for name, text in expected.items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"schemas/{name} is stale: run `ctcurate schema`"


def test_schema_command_writes_and_checks(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["schema", "--output", str(tmp_path)])
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(json_schemas())
    assert runner.invoke(main, ["schema", "--output", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "covid-row.schema.json").write_text("{}")
    stale = runner.invoke(main, ["schema", "--output", str(tmp_path), "--check"])
    target = tmp_path / "covid-row.schema.json"
    assert stale.exit_code == 1
    assert stale.output == f"stale {target}: differs from the models (run `ctcurate schema --output {tmp_path}`)\n"
    target.unlink()
    missing = runner.invoke(main, ["schema", "--output", str(tmp_path), "--check"])
    assert missing.exit_code == 1
    assert missing.output == f"missing {target} (run `ctcurate schema --output {tmp_path}` to write it)\n"


def test_schema_check_outside_the_repository_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["schema", "--check"])
    assert result.exit_code == 2
    assert result.output == (
        "error: schemas: no such folder; run this in the repository's root (it holds schemas/) or pass --output DIR\n"
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_captions_agree_with_literal_eval(items):
    """The regex fast path and ast.literal_eval must read every list the same way."""
    text = repr(items)
    captions, malformed = parse_captions(text)
    assert not malformed
    assert captions == [c.strip() for c in ast.literal_eval(text) if c.strip()]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_captions_never_raises(text):
    captions, _ = parse_captions("[" + text)
    assert all(isinstance(c, str) for c in captions)
