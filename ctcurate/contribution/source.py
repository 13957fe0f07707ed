"""What a contribution is: a folder or zip of images plus one metadata sheet, read into plain rows.

Owns the contribution format (the `ContributionRow` model, published as a JSON Schema), finding the
sheet and the images in a folder or a safely unpacked zip (`zipsafe`), reading the sheet's rows as
raw cell values, and writing the template sheet. Judging the rows is `intake`'s job.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ctcurate.core.findings import Finding, error, has_errors, warning
from ctcurate.core.layout import CLASS_DIRS, IMAGE_SUFFIXES, IMAGES_DIR, class_of_label
from ctcurate.contribution.zipsafe import ZipLimits, extract

SHEET_SUFFIXES = (".xlsx", ".csv")


class Label(str, Enum):
    COVID = "COVID"
    NonCOVID = "NonCOVID"


class ContributionRow(BaseModel):
    """One contributed image: the MetaInfo sheet's own columns plus `Label`.

    The five first fields are required; the rest are the optional MetaInfo columns. Values are
    judged like the dataset sheet's (`ctcurate validate`), so free text stays free text here.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", title="COVID-CT contribution row")

    file_name: str = Field(alias="File name", min_length=1, description="Image file name in the contribution, with extension.")
    label: Label = Field(alias="Label", description="COVID or NonCOVID: which class folder the image goes to.")
    patient_id: str = Field(alias="Patient ID", min_length=1, description="The contributor's own patient ID; mapped to a new dataset 'Patient N'.")
    doi: str = Field(alias="DOI", min_length=1, description="DOI of the source paper, not yet in the dataset (any form: 10.x/y, doi:, https://doi.org/...).")
    captions: str = Field(alias="Captions", description="The figure caption the image was cut from.")
    age: int | str | None = Field(default=None, alias="Age", description="Age in years (a number); as the MetaInfo sheet's Age column.")
    gender: str | None = Field(default=None, alias="Gender", description="M or F; as the MetaInfo sheet's Gender column.")
    location: str | None = Field(default=None, alias="Location", description="Where the patient was treated (city, country).")
    medical_history: str | None = Field(default=None, alias="Medical history", description="Free text from the paper.")
    time: str | None = Field(default=None, alias="Time", description="When the scan was taken relative to onset or admission.")
    severity: str | None = Field(default=None, alias="Severity", description="Clinical course or findings as the paper states them.")
    other_diseases: str | None = Field(default=None, alias="Other diseases", description="Comorbidities as the paper states them.")


REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.alias or n for n, f in ContributionRow.model_fields.items() if f.is_required())
ALL_COLUMNS: tuple[str, ...] = tuple(f.alias or n for n, f in ContributionRow.model_fields.items())
_CANONICAL = {c.casefold(): c for c in ALL_COLUMNS}


@dataclass(frozen=True)
class SheetRow:
    """One sheet row as raw cell values keyed by canonical column name; `row` as Excel shows it."""

    row: int
    values: dict[str, object]

    def text(self, column: str) -> str:
        value = self.values.get(column)
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Contribution:
    """A contribution as found on disk: where it is, its sheet rows, its images, and what was wrong."""

    source: Path
    root: Path | None
    sheet: Path | None
    rows: tuple[SheetRow, ...] = field(default=())
    images: dict[str, Path] = field(default_factory=dict)  # relative POSIX path -> file
    findings: tuple[Finding, ...] = field(default=())

    @property
    def usable(self) -> bool:
        return not has_errors(self.findings)

    def sheet_name(self) -> str:
        return self.sheet.name if self.sheet else self.source.name


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _read_rows(sheet: Path) -> tuple[list[str], list[tuple[int, list[object]]]]:
    """Header cells and (Excel row number, cells) of the first worksheet or the CSV."""
    if sheet.suffix.lower() == ".csv":
        with open(sheet, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
        body: list[tuple[int, list[object]]] = [(i + 2, list(r)) for i, r in enumerate(rows[1:])]
        return (list(rows[0]) if rows else []), body
    import openpyxl

    wb = openpyxl.load_workbook(sheet, read_only=True, data_only=True)
    try:
        ws = wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header = [("" if c is None else str(c)) for c in next(it, ())]
        body = [(i + 2, list(r)) for i, r in enumerate(it)]
    finally:
        wb.close()
    return header, body


def read_sheet(sheet: Path) -> tuple[list[SheetRow], list[Finding]]:
    """Rows of a contribution sheet; unknown or missing columns and unreadable files are findings."""
    where = {"file": sheet.name}
    try:
        header, body = _read_rows(sheet)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, KeyError) as exc:
        return [], [error("sheet.unreadable", f"cannot read the sheet: {exc}", **where)]
    except Exception as exc:  # openpyxl raises zipfile/xml errors of many kinds for a broken xlsx
        return [], [error("sheet.unreadable", f"cannot read the sheet: {type(exc).__name__}: {exc}", **where)]
    findings: list[Finding] = []
    columns: list[str | None] = []
    for name in header:
        canonical = _CANONICAL.get(str(name).strip().casefold())
        if canonical is None and str(name).strip():
            findings.append(warning("column.unknown", "column is not part of the contribution format; ignored",
                                    value=str(name), row=1, **where))
        elif canonical and canonical in columns:
            findings.append(error("column.duplicate", "column appears twice", value=str(name), row=1, **where))
            canonical = None
        elif canonical and canonical != name:
            findings.append(warning("column.spelling", f"column header written as {name!r}",
                                    value=str(name), row=1, hint=f"write it as {canonical!r}", **where))
        columns.append(canonical)
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            findings.append(error("column.missing", f"required column {required!r} is missing", row=1,
                                  column=required, hint=f"the columns are: {', '.join(ALL_COLUMNS)}", **where))
    rows = []
    for number, cells in body:
        if all(_is_blank(c) for c in cells):
            continue
        values = {col: cells[i] if i < len(cells) else None for i, col in enumerate(columns) if col}
        values = {k: (None if _is_blank(v) else v) for k, v in values.items()}
        rows.append(SheetRow(row=number, values=values))
    if not rows and not has_errors(findings):
        findings.append(error("sheet.empty", "the sheet has no rows", **where))
    return rows, findings


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            yield path
        elif path.is_file():
            yield path


def scan_folder(source: Path, root: Path) -> Contribution:
    """Find the one sheet and the images under `root` (a folder, or where a zip was unpacked)."""
    findings: list[Finding] = []
    sheets: list[Path] = []
    images: dict[str, Path] = {}
    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts) or path.name.startswith("~$"):
            continue  # hidden files and editor lock files
        if path.is_symlink():
            findings.append(error("contribution.link", "symbolic links are not accepted", file=rel))
            continue
        suffix = path.suffix.lower()
        if suffix in SHEET_SUFFIXES:
            sheets.append(path)
        elif suffix in IMAGE_SUFFIXES:
            images[rel] = path
        else:
            findings.append(warning("contribution.extra-file", "neither an image nor the sheet; ignored", file=rel))
    if not sheets:
        findings.append(error("sheet.missing", "no metadata sheet (.xlsx or .csv) in the contribution",
                              file=source.name, hint="run `ctcurate add-contribution --template contribution.xlsx`"))
        return Contribution(source, root, None, (), images, tuple(findings))
    if len(sheets) > 1:
        names = ", ".join(p.relative_to(root).as_posix() for p in sheets)
        findings.append(error("sheet.ambiguous", f"more than one sheet: {names}", file=source.name,
                              hint="keep exactly one .xlsx or .csv"))
        return Contribution(source, root, None, (), images, tuple(findings))
    rows, sheet_findings = read_sheet(sheets[0])
    return Contribution(source, root, sheets[0], tuple(rows), images, tuple(findings + sheet_findings))


@contextmanager
def open_contribution(source: Path, limits: ZipLimits | None = None) -> Iterator[Contribution]:
    """Yield the contribution at `source` (folder or .zip, unpacked to a temporary folder for the block)."""
    if source.is_dir():
        yield scan_folder(source, source)
        return
    if source.suffix.lower() != ".zip":
        yield Contribution(source, None, None, findings=(
            error("contribution.format", "expected a folder or a .zip file", file=source.name),))
        return
    with tempfile.TemporaryDirectory(prefix="ctcurate-contribution-") as tmp:
        check = extract(source, Path(tmp) / "unpacked", limits or ZipLimits())
        if not check.ok:
            yield Contribution(source, None, None, findings=check.findings)
            return
        found = scan_folder(source, Path(tmp) / "unpacked")
        yield Contribution(found.source, found.root, found.sheet, found.rows, found.images,
                           tuple(check.findings) + found.findings)


@dataclass(frozen=True)
class LabelledImage:
    """A contributed image and the class folder it declares (None: it declares none)."""

    path: Path
    class_dir: str | None


def labelled_images(contribution: Contribution) -> dict[str, LabelledImage]:
    """Every image by its path in the contribution (a leading `Images-processed/` dropped), with its class:
    the Label of the sheet row naming it, else the class folder it sits in (`CT_COVID/`, `CT_NonCOVID/`)."""
    declared = {}
    for r in contribution.rows:
        name, class_dir = r.text("File name").strip(), class_of_label(r.text("Label"))
        if name and class_dir:
            declared[name] = class_dir
    out = {}
    for rel, path in contribution.images.items():
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] == IMAGES_DIR:
            parts = parts[1:]
        folder = parts[-2] if len(parts) > 1 and parts[-2] in CLASS_DIRS else None
        out["/".join(parts)] = LabelledImage(path, declared.get(rel) or declared.get(parts[-1]) or folder)
    return out


def write_template(target: Path, force: bool = False) -> None:
    """Write an empty contribution sheet (.xlsx with a column guide, or .csv) at `target`.

    A non-empty file already there (likely a filled sheet) is refused unless `force` (`WouldOverwrite`).
    """
    from ctcurate.core.atomic import atomic_path, atomic_write, refuse_existing

    refuse_existing(target, force)
    suffix = target.suffix.lower()
    if suffix == ".csv":
        with atomic_write(target) as fh:
            csv.writer(fh, lineterminator="\r\n").writerow(ALL_COLUMNS)
        return
    if suffix != ".xlsx":
        raise ValueError(f"{target.name}: the template must end in .xlsx or .csv")
    import openpyxl
    from openpyxl.styles import Font

    wb = openpyxl.Workbook()
    ws = wb.create_sheet("contribution", 0)
    wb.remove(wb.worksheets[1])  # the default empty sheet
    ws.append(list(ALL_COLUMNS))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    guide = wb.create_sheet("columns")
    guide.append(["Column", "Required", "Meaning"])
    for f in ContributionRow.model_fields.values():
        guide.append([f.alias, "yes" if f.is_required() else "no", f.description or "as in COVID-CT-MetaInfo.xlsx"])
    for sheet, widths in ((ws, {"A": 40, "C": 14, "D": 30, "E": 80}), (guide, {"A": 18, "B": 10, "C": 90})):
        for col, width in widths.items():
            sheet.column_dimensions[col].width = width
    with atomic_path(target) as tmp:
        wb.save(tmp)
