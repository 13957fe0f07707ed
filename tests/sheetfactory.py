"""Small builders for test sheets (imported by the tests; not a fixture module)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from openpyxl import Workbook

from ctcurate.validation.schemas import COVID_COLUMNS, NONCOVID_COLUMNS

REPO = Path(__file__).resolve().parent.parent
COVID_HEADER = list(COVID_COLUMNS.values())
NONCOVID_HEADER = ["", *NONCOVID_COLUMNS.values()]


def covid_row(file_name: str, patient: str = "Patient 1", **cells: object) -> list[object]:
    """A COVID sheet row; keyword names are canonical columns (age=41, doi='10.1/x')."""
    values: dict[str, object] = {"file_name": file_name, "patient_id": patient} | cells
    return [values.get(key) for key in COVID_COLUMNS]


def write_xlsx(path: Path, rows: Sequence[Sequence[object]], header: Sequence[str] = COVID_HEADER) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = "positive_captions"
    ws.append(list(header))
    for row in rows:
        ws.append(list(row))
    wb.save(path)
    return path


def write_noncovid_csv(path: Path, rows: Sequence[tuple[str, str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(NONCOVID_HEADER)
        for i, (name, patient) in enumerate(rows):
            w.writerow([i, name, patient])
    return path
