"""`validate`: the real dataset's known defects are found exactly, and each cross-file check fires."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from sheetfactory import REPO, covid_row, write_noncovid_csv, write_xlsx

from ctcurate.core.findings import Finding
from ctcurate.core.codes import descriptions
from ctcurate.validation.checks import InputError, validate


@pytest.fixture(scope="module")
def real(real_data):
    return validate(metadata=REPO / "metadata", images=real_data)


def at(findings: list[Finding], code: str) -> dict[int | str | None, Finding]:
    return {(f.row if f.row is not None else f.file): f for f in findings if f.code == code}


# --- the real COVID-CT data -------------------------------------------------------------------


def test_real_summary(real):
    s = real.summary
    assert s["rows"] == {"COVID-CT-MetaInfo.xlsx": 349, "NonCOVID-CT-MetaInfo.csv": 397}
    assert s["images"] == 746 and s["split_entries"] == 746 and s["images_checked"] is True
    assert set(s["by_code"]) == {
        "age.not-numeric",
        "captions.malformed",
        "cell.same-as-above",
        "cell.whitespace",
        "doi.derivable",
        "doi.inner-whitespace",
        "doi.whitespace",
        "file.missing",
        "image.format-mismatch",
        "patient.conflict",
        "row.stray",
    }


def test_real_file_names_without_png(real):
    missing = at(real.findings, "file.missing")
    assert len(missing) == 83
    f = missing[266]
    assert (f.file, f.column, f.value, f.severity.value) == (
        "COVID-CT-MetaInfo.xlsx",
        "File name",
        "2020.03.25.20043166-p17-78",
        "error",
    )
    assert f.hint == "the file is '2020.03.25.20043166-p17-78.png': write the full name (ctcurate validate --fix does)"
    assert all(f.hint.startswith("the file is '" + f.value + ".png'") for f in missing.values())
    # The image the misspelled row means is not reported again as having no row.
    assert "file.no-row" not in real.summary["by_code"]


def test_real_dois_with_inner_spaces(real):
    inner = at(real.findings, "doi.inner-whitespace")
    assert sorted(inner) == [330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344]
    assert inner[330].value == "10.1016/ S0140-6736(20)30154-9 "
    assert inner[330].hint == "write it as 10.1016/s0140-6736(20)30154-9"


def test_real_genders_with_trailing_space(real):
    genders = {f.row: f.value for f in real.findings if f.code == "cell.whitespace" and f.column == "Gender"}
    assert len(genders) == 23
    assert genders[288] == "F " and genders[291] == "M "
    assert "gender.invalid" not in real.summary["by_code"]


def test_real_non_numeric_ages(real):
    ages = {f.row: f.value for f in real.findings if f.code == "age.not-numeric"}
    assert ages == {**{r: "Young Child" for r in range(176, 182)}, **{r: "40+" for r in range(238, 244)}}


def test_real_same_as_above(real):
    same = at(real.findings, "cell.same-as-above")
    assert sorted(same) == [3, 4, 5]
    assert all(f.column == "Severity" and f.severity.value == "warning" for f in same.values())
    assert real.covid_rows[1].severity.startswith("Chest tightness, unproductive cough")
    # The copied value's trailing space is reported once, on row 2 where it is written.
    assert [f.row for f in real.findings if f.code == "cell.whitespace" and f.column == "Severity" and f.row < 6] == [2]


def test_real_png_files_holding_jpeg(real, real_data):
    mismatch = at(real.findings, "image.format-mismatch")
    expected = set()
    for path in (real_data / "Images-processed").rglob("*"):
        if path.is_file() and path.read_bytes()[:3] == b"\xff\xd8\xff" and path.suffix == ".png":
            expected.add(path.relative_to(real_data).as_posix())
    assert set(mismatch) == expected and len(expected) == 34
    f = mismatch["Images-processed/CT_COVID/2020.03.22.20034041-p16-66.png"]
    assert f.message == "a .png file holding JPEG data"


def test_real_format_mismatch_agrees_with_file_command(real, real_data):
    if shutil.which("file") is None:
        if os.environ.get("CI"):
            pytest.fail("file(1) is not installed")
        pytest.skip("file(1) is not installed")
    folder = real_data / "Images-processed" / "CT_COVID"
    out = subprocess.run(
        ["file", "--brief", "--mime-type", *sorted(p.name for p in folder.iterdir())],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    jpeg_pngs = {
        n
        for n, mime in zip(sorted(p.name for p in folder.iterdir()), out, strict=True)
        if n.endswith(".png") and mime == "image/jpeg"
    }
    assert {Path(f).name for f in at(real.findings, "image.format-mismatch")} == jpeg_pngs


def test_real_derivable_dois(real):
    derivable = at(real.findings, "doi.derivable")
    assert len(derivable) == 146
    assert derivable[2].hint == "set the DOI to 10.1101/2020.01.24.919183"
    assert derivable[266].hint == "set the DOI to 10.1101/2020.03.25.20043166"
    assert all(f.severity.value == "warning" for f in derivable.values())


def test_real_patient_143_is_three_people(real):
    conflicts = [f for f in real.findings if f.code == "patient.conflict"]
    assert [f.column for f in conflicts] == ["Age", "Gender"]
    assert (
        conflicts[0].message
        == "Patient 143 has conflicting age values: 73 (rows 210, 211); 70 (rows 212); 76 (rows 213)"
    )


def test_real_splits_are_consistent(real):
    assert not [f for f in real.findings if f.code.startswith("split.")]


def test_real_errors_are_exactly_the_known_defects(real):
    errors = Counter(f.code for f in real.findings if f.severity.value == "error")
    assert errors == {"file.missing": 83, "patient.conflict": 2}


def test_every_code_emitted_is_registered(real):
    assert set(real.summary["by_code"]) <= set(descriptions("validate"))


def test_without_images_only_metadata_and_splits_are_checked(monkeypatch):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    result = validate(plan_fixes=True)
    assert result.images_checked is False
    assert result.inputs.covid_sheet == REPO / "metadata" / "COVID-CT-MetaInfo.xlsx"
    codes = set(result.summary["by_code"])
    assert not codes & {"file.missing", "file.no-row", "image.format-mismatch", "split.unassigned"}
    assert "doi.inner-whitespace" in codes
    # The row names are still matched against the split lists, so fixes complete the extensions.
    assert sum(1 for fx in result.fixes if fx.code == "file.missing") == 83


# --- a small synthetic dataset ------------------------------------------------------------------


def _png(path: Path, color: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), color).save(path, format="PNG")


def _jpeg(path: Path, color: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (color, color, color)).save(path, format="JPEG")


@pytest.fixture()
def tiny(tmp_path):
    """Two COVID patients, two NonCOVID images, valid splits: validates clean."""
    root = tmp_path / "data"
    covid = root / "Images-processed" / "CT_COVID"
    noncovid = root / "Images-processed" / "CT_NonCOVID"
    for i, name in enumerate(["p1-a.png", "p1-b.png", "p2-a.png"]):
        _png(covid / name, i * 40)
    for i, name in enumerate(["0.jpg", "1.jpg"]):
        _jpeg(noncovid / name, i * 40)
    meta = tmp_path / "metadata"
    meta.mkdir()
    write_xlsx(
        meta / "COVID-CT-MetaInfo.xlsx",
        [
            covid_row("p1-a.png", "Patient 1", age=41, gender="M", doi="10.1136/bmj.m606"),
            covid_row("p1-b.png", "Patient 1", age=41, gender="M", doi="10.1136/bmj.m606"),
            covid_row("p2-a.png", "Patient 2", age=50, gender="F", doi="10.1136/bmj.m606"),
        ],
    )
    write_noncovid_csv(meta / "NonCOVID-CT-MetaInfo.csv", [("0.jpg", "np0"), ("1.jpg", "np1")])
    splits = meta / "Data-split"
    (splits / "COVID").mkdir(parents=True)
    (splits / "NonCOVID").mkdir(parents=True)
    (splits / "COVID" / "trainCT_COVID.txt").write_text("p1-a.png\np1-b.png\n")
    (splits / "COVID" / "testCT_COVID.txt").write_text("p2-a.png\n")
    (splits / "NonCOVID" / "trainCT_NonCOVID.txt").write_text("0.jpg\n")
    (splits / "NonCOVID" / "valCT_NonCOVID.txt").write_text("1.jpg\n")
    for empty in ("COVID/valCT_COVID.txt", "NonCOVID/testCT_NonCOVID.txt"):
        (splits / empty).write_text("")  # every list exists, some with no names
    return root, meta


def codes_of(result) -> list[tuple[str, str | None, int | None]]:
    return [(f.code, f.file, f.row) for f in result.findings]


def test_tiny_dataset_is_clean(tiny):
    root, meta = tiny
    result = validate(metadata=meta, images=root)
    assert result.findings == []
    assert result.summary["images"] == 5


def test_patient_in_two_splits_is_a_leak(tiny):
    root, meta = tiny
    (meta / "Data-split/COVID/trainCT_COVID.txt").write_text("p1-a.png\n")
    (meta / "Data-split/COVID/testCT_COVID.txt").write_text("p2-a.png\np1-b.png\n")
    result = validate(metadata=meta, images=root)
    assert codes_of(result) == [("split.patient-leak", "COVID-CT-MetaInfo.xlsx", 2)]
    f = result.findings[0]
    assert f.message == "Patient 1 has images in 2 splits (train: p1-a.png; test: p1-b.png)"
    assert (f.column, f.value) == ("Patient ID", "Patient 1")


def test_split_membership_checks(tiny):
    root, meta = tiny
    (meta / "Data-split/COVID/trainCT_COVID.txt").write_text("p1-a.png\n p1-a.png\np1-a.pn\n")
    (meta / "Data-split/COVID/valCT_COVID.txt").write_text("p2-a.png\n")
    result = validate(metadata=meta, images=root)
    assert codes_of(result) == [
        ("split.whitespace", "Data-split/COVID/trainCT_COVID.txt", 2),
        ("split.duplicate", "Data-split/COVID/trainCT_COVID.txt", 2),
        ("split.missing-file", "Data-split/COVID/trainCT_COVID.txt", 3),
        ("split.unassigned", "Images-processed/CT_COVID/p1-b.png", None),
        ("split.multiple", "Images-processed/CT_COVID/p2-a.png", None),
        ("split.patient-leak", "COVID-CT-MetaInfo.xlsx", 4),  # p2-a.png in val and test
    ]
    assert result.findings[2].hint == "did you mean 'p1-a.png'?"


def test_rows_and_files_must_match(tiny):
    root, meta = tiny
    _png(root / "Images-processed/CT_COVID/extra.png")
    (meta / "Data-split/COVID/testCT_COVID.txt").write_text("p2-a.png\nextra.png\n")
    write_xlsx(
        meta / "COVID-CT-MetaInfo.xlsx",
        [
            covid_row("p1-a", "Patient 1"),
            covid_row("P1-B.PNG", "Patient 1"),
            covid_row("p2-x.png", "Patient 2"),
        ],
    )
    result = validate(metadata=meta, images=root)
    found = {(f.code, f.row, f.file): f for f in result.findings}
    assert sorted(found) == [
        ("file.missing", 2, "COVID-CT-MetaInfo.xlsx"),
        ("file.missing", 3, "COVID-CT-MetaInfo.xlsx"),
        ("file.missing", 4, "COVID-CT-MetaInfo.xlsx"),
        ("file.no-row", None, "Images-processed/CT_COVID/extra.png"),
        ("file.no-row", None, "Images-processed/CT_COVID/p2-a.png"),
    ]
    assert found[("file.missing", 3, "COVID-CT-MetaInfo.xlsx")].hint.startswith("the file is 'p1-b.png'")
    assert found[("file.missing", 4, "COVID-CT-MetaInfo.xlsx")].hint == "did you mean 'p2-a.png'?"


def test_unicode_form_of_a_name_is_a_near_match(tiny):
    root, meta = tiny
    nfd = "Sa\u0303o.png"  # as a macOS disk stores it
    _png(root / "Images-processed/CT_COVID" / nfd)
    (meta / "Data-split/COVID/testCT_COVID.txt").write_text(f"p2-a.png\n{nfd}\n")
    write_xlsx(
        meta / "COVID-CT-MetaInfo.xlsx",
        [
            covid_row("p1-a.png"),
            covid_row("p1-b.png"),
            covid_row("p2-a.png", "Patient 2"),
            covid_row("S\u00e3o.png", "Patient 3"),
        ],
    )
    result = validate(metadata=meta, images=root, plan_fixes=True)
    assert [(f.code, f.row) for f in result.findings] == [("file.missing", 5)]
    assert [fx.new for fx in result.fixes if fx.code == "file.missing"] == [nfd]


def test_non_image_files_in_an_image_folder_are_reported(tiny):
    root, meta = tiny
    (root / "Images-processed/CT_COVID/scan.webp").write_bytes(b"RIFF")
    (root / "Images-processed/CT_COVID/.DS_Store").write_bytes(b"\0")
    result = validate(metadata=meta, images=root)
    assert [(f.code, f.file) for f in result.findings] == [("file.not-image", "Images-processed/CT_COVID/scan.webp")]


def test_broken_and_mislabelled_images(tiny):
    root, meta = tiny
    covid = root / "Images-processed/CT_COVID"
    Image.frombytes("L", (256, 256), bytes(range(256)) * 256).rotate(33).save(covid / "p1-a.png")
    data = (covid / "p1-a.png").read_bytes()
    (covid / "p1-a.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    _jpeg(covid / "p1-b.png")
    result = validate(metadata=meta, images=root)
    assert [(f.code, f.file, f.severity.value) for f in result.findings] == [
        ("image.unreadable", "Images-processed/CT_COVID/p1-a.png", "error"),
        ("image.format-mismatch", "Images-processed/CT_COVID/p1-b.png", "warning"),
    ]
    assert result.findings[1].hint.startswith("convert it to PNG or rename it to p1-b.jpg")


def test_a_single_sheet_can_be_validated(tiny):
    root, meta = tiny
    result = validate(metadata=meta / "NonCOVID-CT-MetaInfo.csv", images=root)
    assert result.findings == [] and result.inputs.covid_sheet is None
    assert result.summary["rows"] == {"NonCOVID-CT-MetaInfo.csv": 2}


def test_inputs_that_cannot_be_validated(tmp_path):
    with pytest.raises(InputError, match=r"nowhere: no such file or folder$"):
        validate(metadata=tmp_path / "nowhere")
    with pytest.raises(InputError, match=r": no COVID-CT-MetaInfo.xlsx or NonCOVID-CT-MetaInfo.csv there$"):
        validate(metadata=tmp_path)
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"odd.csv: missing column\(s\) 'File name' \(COVID sheet\) or 'image name'"):
        validate(metadata=odd)
    with pytest.raises(InputError, match="no Images-processed/ folder there"):
        validate(metadata=REPO / "metadata", images=tmp_path)


def test_a_missing_split_list_and_a_folder_in_its_place_have_their_own_findings(tiny):
    root, meta = tiny
    (meta / "Data-split/NonCOVID/testCT_NonCOVID.txt").unlink()
    (meta / "Data-split/COVID/valCT_COVID.txt").unlink()
    (meta / "Data-split/COVID/valCT_COVID.txt").mkdir()
    result = validate(metadata=meta, images=root)
    assert codes_of(result) == [
        ("split.list-not-a-file", "Data-split/COVID/valCT_COVID.txt", None),
        ("split.list-missing", "Data-split/NonCOVID/testCT_NonCOVID.txt", None),
    ]
    assert [f.severity.value for f in result.findings] == ["error", "warning"]


def test_an_empty_image_folder_is_not_clean(tiny):
    root, meta = tiny
    for p in (root / "Images-processed").rglob("*.*"):
        p.unlink()
    result = validate(metadata=meta, images=root)
    assert ("image.none", "Images-processed/", None) in codes_of(result)
    empty = root.parent / "empty"
    (empty / "Images-processed").mkdir(parents=True)
    assert ("image.none", "Images-processed/", None) in codes_of(validate(metadata=meta, images=empty))


def test_fifos_devices_and_looping_links_are_findings_not_silently_skipped(tiny):
    root, meta = tiny
    folder = root / "Images-processed" / "CT_COVID"
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    result = validate(metadata=meta, images=root)
    special = {(f.file, f.message) for f in result.findings if f.code == "file.special"}
    assert special == {
        ("Images-processed/CT_COVID/pipe.png", "a FIFO, not an image file; it is not checked or used"),
        ("Images-processed/CT_COVID/loop.png", "a symbolic link that loops, not an image file; it is not checked or used"),
        ("Images-processed/CT_COVID/dangling.png", "a symbolic link that leads nowhere, not an image file; it is not checked or used"),
        ("Images-processed/CT_COVID/zero.png", "a link to a device, not an image file; it is not checked or used"),
    }


def test_a_pending_contribution_is_said_first(tiny):
    root, meta = tiny
    (root / ".ctcurate").mkdir()
    (root / ".ctcurate" / "apply-journal.json").write_text("{}")
    result = validate(metadata=meta, images=root)
    assert codes_of(result) == [("dataset.pending-contribution", str(root), None)]
    (root / ".ctcurate" / "apply-journal.json").unlink()
    (meta / ".ctcurate-staging-x").mkdir()
    assert codes_of(validate(metadata=meta, images=root)) == [("dataset.pending-contribution", str(root), None)]
# --- defects a census finds that validate used to let through (issue 11) ----------------------


def _rewrite_covid(meta: Path, edit) -> None:
    from openpyxl import load_workbook

    path = meta / "COVID-CT-MetaInfo.xlsx"
    wb = load_workbook(path)
    edit(wb.active)
    wb.save(path)


def test_a_row_naming_another_rows_image_is_a_duplicate(tiny):
    root, meta = tiny
    _rewrite_covid(meta, lambda ws: ws.__setitem__("A2", "p1-b"))  # completes to row 3's file
    result = validate(metadata=meta, images=root)
    dup = [f for f in result.findings if f.code == "file.duplicate"]
    assert [(f.row, f.column, f.value) for f in dup] == [(2, "File name", "p1-b")]
    assert dup[0].message == "names the image 'p1-b.png', which row 3 already describes"
    assert [(f.code, f.value) for f in result.findings if f.code != "file.duplicate"] == [
        ("file.no-row", "p1-a.png")
    ]
    assert not validate(metadata=meta, images=root, plan_fixes=True).fixes  # no fix makes a second p1-b.png row


def test_repeated_row_is_located_at_its_file_name(tiny):
    root, meta = tiny
    _rewrite_covid(meta, lambda ws: [ws.cell(3, c, ws.cell(2, c).value) for c in range(1, 12)])
    [dup] = [f for f in validate(metadata=meta, images=root).findings if f.code == "row.duplicate"]
    assert (dup.row, dup.column, dup.value) == (3, "File name", "p1-a.png")


def test_patient_ids_spelled_another_way(tiny):
    root, meta = tiny

    def edit(ws):
        ws["B2"], ws["B3"], ws["B4"] = "patient 1", "P-1", "Patient 0002"

    _rewrite_covid(meta, edit)
    write_noncovid_csv(meta / "NonCOVID-CT-MetaInfo.csv", [("0.jpg", "Crawled Patient 07"), ("1.jpg", "patient 5")])
    result = validate(metadata=meta, images=root, plan_fixes=True)
    forms = {(f.file, f.row): f for f in result.findings if f.code == "patient.id-form"}
    assert sorted((file[:5], row, f.value) for (file, row), f in forms.items()) == [
        ("COVID", 2, "patient 1"),
        ("COVID", 3, "P-1"),
        ("COVID", 4, "Patient 0002"),
        ("NonCO", 2, "Crawled Patient 07"),
        ("NonCO", 3, "patient 5"),
    ]
    assert forms[("COVID-CT-MetaInfo.xlsx", 3)].hint == "write it as 'Patient 1' (ctcurate validate --fix does)"
    assert forms[("NonCOVID-CT-MetaInfo.csv", 3)].hint.endswith("not rewritten by --fix: no single ID of the "
                                                                "dataset's form follows from it")
    rewrites = sorted((f.path.name[:5], f.row, f.old, f.new) for f in result.fixes if f.code == "patient.id-form")
    assert rewrites == [
        ("COVID", 2, "patient 1", "Patient 1"),
        ("COVID", 3, "P-1", "Patient 1"),
        ("COVID", 4, "Patient 0002", "Patient 2"),
        ("NonCO", 2, "Crawled Patient 07", "crawled_patient_7"),
    ]


def test_contributed_noncovid_patient_keeps_the_dataset_wide_form(tiny):
    root, meta = tiny
    write_noncovid_csv(meta / "NonCOVID-CT-MetaInfo.csv", [("0.jpg", "medpix_patient_3"), ("1.jpg", "Patient 218")])
    assert validate(metadata=meta, images=root).findings == []


def test_patient_id_rewrite_that_would_merge_two_people_is_left(tiny):
    root, meta = tiny
    _rewrite_covid(meta, lambda ws: ws.__setitem__("B4", "P-1"))  # row 4 is 50 F; Patient 1 is 41 M
    result = validate(metadata=meta, images=root, plan_fixes=True)
    [form] = [f for f in result.findings if f.code == "patient.id-form"]
    assert form.hint.endswith("Patient 1 (row 2) has another age or gender: is this the same person?")
    assert not [f for f in result.fixes if f.code == "patient.id-form"]


def test_merged_range_is_named_and_filled_by_fix(tiny):
    root, meta = tiny

    def edit(ws):
        ws["E2"] = "Wuhan"
        ws.merge_cells("E2:E4")

    _rewrite_covid(meta, edit)
    result = validate(metadata=meta, images=root, plan_fixes=True)
    [merged] = [f for f in result.findings if f.code == "sheet.merged-cells"]
    assert (merged.row, merged.column, merged.value) == (2, "Location", "E2:E4")
    assert [r.location for r in result.covid_rows] == ["Wuhan"] * 3
    fills = [(f.row, f.column, f.new) for f in result.fixes if f.code == "sheet.merged-cells"]
    assert fills == [(3, "Location", "Wuhan"), (4, "Location", "Wuhan")]


def test_hidden_column_with_content_is_reported(tiny):
    root, meta = tiny

    def edit(ws):
        ws["E2"] = "Wuhan"
        ws.column_dimensions["E"].hidden = True

    _rewrite_covid(meta, edit)
    [hidden] = [f for f in validate(metadata=meta, images=root).findings if f.code == "sheet.hidden-column"]
    assert hidden.column == "Location" and "hidden" in hidden.message


def test_overlong_cell_is_reported(tiny):
    root, meta = tiny
    _rewrite_covid(meta, lambda ws: ws.__setitem__("K2", "['" + "x" * 10000 + "']"))
    [long] = [f for f in validate(metadata=meta, images=root).findings if f.code == "cell.too-long"]
    assert (long.row, long.column) == (2, "Captions")
    assert long.message == "cell holds 10,004 characters (more than 4,000 for this column)"


def test_cyrillic_letter_in_a_doi_is_a_lookalike(tiny):
    root, meta = tiny
    _rewrite_covid(meta, lambda ws: ws.__setitem__("J2", "10.1016/\u0458.ijid.2020.03.001"))
    result = validate(metadata=meta, images=root, plan_fixes=True)
    [look] = [f for f in result.findings if f.code == "doi.lookalike"]
    assert (look.row, look.hint) == (2, "write it as 10.1016/j.ijid.2020.03.001")
    assert [(f.row, f.new) for f in result.fixes if f.column == "DOI"] == [(2, "10.1016/j.ijid.2020.03.001")]


def test_new_prefix_doi_beside_its_preprint_file_is_no_mismatch(tmp_path):
    path = write_xlsx(
        tmp_path / "s.xlsx",
        [
            covid_row("2020.02.10.20021584-p6-52%0.png", doi="10.64898/2020.02.10.20021584"),
            covid_row("2026.01.28.12345678-p1.png", "Patient 2"),
        ],
    )
    result = validate(metadata=path, plan_fixes=True)
    assert [(f.code, f.row, f.hint) for f in result.findings if f.code.startswith("doi.")] == [
        ("doi.derivable", 3, "set the DOI to 10.64898/2026.01.28.12345678")
    ]
    assert [(f.row, f.new) for f in result.fixes if f.column == "DOI"] == [(3, "10.64898/2026.01.28.12345678")]


# --- a sheet full of one mistake ---------------------------------------------------------------


def _sheet_of_one_mistake(tmp_path: Path, rows: int) -> Path:
    """`rows` rows, each with a trailing space in Location and no patient ID on every third."""
    sheet = tmp_path / "COVID-CT-MetaInfo.xlsx"
    write_xlsx(sheet, [covid_row(f"p{i}.png", None if i % 3 == 0 else f"Patient {i}", location="Wuhan ")
                       for i in range(1, rows + 1)])
    return sheet


def test_findings_past_the_cap_are_counted_not_listed(tmp_path, monkeypatch):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)  # the sheet alone
    result = validate(metadata=_sheet_of_one_mistake(tmp_path, 9), listed_per_code=2)
    listed = Counter(f.code for f in result.findings)
    assert listed["cell.whitespace"] == 2 and listed["field.required"] == 2
    unlisted = {f.value: (f.severity.value, f.message) for f in result.findings if f.code == "findings.unlisted"}
    assert unlisted == {
        "cell.whitespace": ("warning", "7 more cell.whitespace finding(s) not listed: only the first 2 are"),
        "field.required": ("error", "1 more field.required finding(s) not listed: only the first 2 are"),
    }
    assert [f.row for f in result.findings if f.code == "cell.whitespace"] == [2, 3]  # the first ones, in row order
    assert [f.row for f in result.findings if f.code == "field.required"] == [4, 7]
    assert result.summary["unlisted"] == {"cell.whitespace": 7, "field.required": 1}


def test_without_a_cap_every_finding_is_listed(tmp_path, monkeypatch):
    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    result = validate(metadata=_sheet_of_one_mistake(tmp_path, 9), listed_per_code=None)
    listed = Counter(f.code for f in result.findings)
    assert listed["cell.whitespace"] == 9 and listed["field.required"] == 3 and "findings.unlisted" not in listed
    assert "unlisted" not in result.summary


def test_rows_keep_their_full_models_on_demand(tmp_path):
    """Validating keeps only each row's keys; the models are read again when asked for."""
    result = validate(metadata=_sheet_of_one_mistake(tmp_path, 4))
    keys = [(k.row, k.file_name, k.patient_id) for k in result.covid_keys]
    assert keys == [(2, "p1.png", "Patient 1"), (3, "p2.png", "Patient 2"), (5, "p4.png", "Patient 4")]
    assert [(r.row, r.location) for r in result.covid_rows] == [(2, "Wuhan"), (3, "Wuhan"), (5, "Wuhan")]


def test_the_cap_bounds_what_the_file_itself_shows(tmp_path, monkeypatch):
    """A column of Excel dates: one `cell.date` per cell, capped like the rows' findings."""
    import datetime as dt

    monkeypatch.delenv("CTCURATE_DATA", raising=False)
    sheet = tmp_path / "COVID-CT-MetaInfo.xlsx"
    write_xlsx(sheet, [covid_row(f"p{i}.png", f"Patient {i}", time=dt.datetime(2020, 2, i)) for i in range(1, 6)])
    result = validate(metadata=sheet, listed_per_code=2)
    assert [(f.row, f.column) for f in result.findings if f.code == "cell.date"] == [(2, "Time"), (3, "Time")]
    assert result.summary["unlisted"] == {"cell.date": 3}
