"""The one reader of what identifies a dataset's images: the sheets' key columns and the split lists.

Owns reading the file name, patient ID and DOI of every sheet row (both sheets, through `sheets`,
so every command sees the same cells, encodings and row numbers as `validate`) and every line of
the split lists (UTF-8 with or without BOM, else Latin-1). Checks nothing: `validate`
judges these values, the other commands use them. Raises `sheets.SheetError` for an unreadable file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ctcurate.core.layout import CLASS_DIRS, COVID_CLASS, COVID_SHEET, NONCOVID_CLASS, NONCOVID_SHEET, split_files
from ctcurate.core.sheets import CellValue, find_columns, read_lines, read_sheet

# The key columns of each class's sheet: canonical name -> header as upstream writes it.
KEY_COLUMNS = {
    COVID_CLASS: {"file_name": "File name", "patient_id": "Patient ID", "doi": "DOI"},
    NONCOVID_CLASS: {"file_name": "image name", "patient_id": "patient id"},
}
SHEETS = {COVID_CLASS: COVID_SHEET, NONCOVID_CLASS: NONCOVID_SHEET}


@dataclass(frozen=True)
class KeyRow:
    """One sheet row's identifying cells, stripped (None when blank); `row` as Excel shows it."""

    class_dir: str
    sheet: Path
    row: int
    file_name: str | None
    patient_id: str | None
    doi: str | None = None  # the cell as written (normalize it with `doi.normalize`)

    @property
    def image(self) -> str | None:
        """`CT_COVID/x.png`: names without an extension get `.png`, as upstream meant."""
        if not self.file_name:
            return None
        return f"{self.class_dir}/{self.file_name if Path(self.file_name).suffix else self.file_name + '.png'}"


@dataclass(frozen=True)
class SplitLine:
    """One non-empty line of a split list, exactly as written, and where it is."""

    class_dir: str
    split: str
    path: Path
    line: int
    text: str

    @property
    def name(self) -> str:
        return self.text.strip()


def _text(value: CellValue) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def read_sheet_keys(path: Path, class_dir: str, columns: dict[str, str] | None = None) -> list[KeyRow]:
    """The key cells of every data row of one sheet; raises `SheetError` (unreadable, a key column missing)."""
    sheet = read_sheet(path)
    cols, _ = find_columns(sheet, columns or KEY_COLUMNS[class_dir])
    return [
        KeyRow(class_dir, path, number, _text(cells.get("file_name")), _text(cells.get("patient_id")), _text(cells.get("doi")))
        for number, cells in sheet.records(cols)
    ]


def read_key_rows(metadata_dir: Path, read: Callable[[Path, str], list[KeyRow]] | None = None) -> list[KeyRow]:
    """The key cells of both sheets of `metadata_dir` (a sheet that is absent gives no rows);
    `read` is `read_sheet_keys` or one that remembers it (`HashCache.sheet_keys`)."""
    rows: list[KeyRow] = []
    for class_dir, name in SHEETS.items():
        if (metadata_dir / name).is_file():
            rows += (read or read_sheet_keys)(metadata_dir / name, class_dir)
    return rows


def read_split_lines(splits_dir: Path, class_dirs: list[str] | None = None) -> list[SplitLine]:
    """Every non-empty line of the split lists under `splits_dir`, in upstream naming and order."""
    return [
        SplitLine(sf.class_dir, sf.split, sf.path, number, text)
        for sf in split_files(splits_dir, class_dirs or list(CLASS_DIRS))
        for number, text in read_lines(sf.path)
    ]


def split_of(splits_dir: Path | None, class_dirs: list[str] | None = None) -> dict[str, str]:
    """`CT_COVID/x.png` -> the split whose list names it (the last list wins where several do)."""
    if splits_dir is None or not splits_dir.is_dir():
        return {}
    return {f"{s.class_dir}/{s.name}": s.split for s in read_split_lines(splits_dir, class_dirs) if s.name}
