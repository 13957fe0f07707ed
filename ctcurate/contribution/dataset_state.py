"""A read-only snapshot of what a dataset already holds, as far as a contribution must know it.

Owns reading the names, DOIs, patient numbering and split lists of a dataset (images under the data
root, sheets and split lists under the metadata folder, earlier contributions' provenance log).
Writes nothing; `apply` does the writing.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ctcurate.doi import normalize as doi_lib
from ctcurate.core.layout import COVID_SHEET, IMAGES_DIR, NONCOVID_SHEET, SPLIT_NAMES, SPLITS_DIR, list_images, split_files

PROVENANCE_FILE = "contributions.jsonl"
_PATIENT_N = re.compile(r"^\s*patient\s*(\d+)\s*$", re.IGNORECASE)


def figure_key(file_name: str) -> str:
    """The source figure an image was cut from, as check-leakage sees it, compared case-blind.

    `2020.02.10.20021584-p6-52%0.png` and `...-p6-52%3.png` are panels of one figure.
    """
    from ctcurate.leakage.pipeline import source_figure

    return source_figure(file_name).casefold()


@dataclass(frozen=True)
class DatasetState:
    data_root: Path
    metadata_dir: Path
    class_files: dict[str, tuple[str, ...]]  # class folder -> image file names present
    taken_names: frozenset[str]  # casefolded names used anywhere (folders, sheets, split lists)
    dois: dict[str, str]  # paper_key(DOI) -> an example file name citing it
    max_patient_number: int
    splits: dict[str, dict[str, tuple[str, ...]]]  # class folder -> split -> names, in file order
    figure_splits: dict[tuple[str, str], str] = field(default_factory=dict)  # (class, figure) -> split

    def split_counts(self, class_dir: str) -> dict[str, int]:
        return {s: len(self.splits.get(class_dir, {}).get(s, ())) for s in SPLIT_NAMES}


def _covid_sheet_rows(path: Path) -> list[tuple[object, ...]]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        return [tuple(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
    finally:
        wb.close()


def paper_key(raw: object) -> str:
    """How DOIs are compared to tell "same paper": normalized, preprint version dropped."""
    return doi_lib.strip_version(doi_lib.normalize(raw))


def _patient_number(value: object) -> int | None:
    m = _PATIENT_N.match("" if value is None else str(value))
    return int(m.group(1)) if m else None


def read_state(data_root: Path, metadata_dir: Path) -> DatasetState:
    """Snapshot the dataset; raises OSError (or openpyxl's errors) when a file cannot be read."""
    class_files = {c: tuple(p.name for p in paths) for c, paths in list_images(data_root).items()} \
        if (data_root / IMAGES_DIR).is_dir() else {}
    originals = [n for names in class_files.values() for n in names]
    dois: dict[str, str] = {}
    max_n = 0

    covid = metadata_dir / COVID_SHEET
    if covid.is_file():
        rows = _covid_sheet_rows(covid)
        header = [("" if c is None else str(c)).strip().casefold() for c in (rows[0] if rows else ())]
        col = {name: header.index(name) for name in ("file name", "patient id", "doi") if name in header}
        for r in rows[1:]:
            name = r[col["file name"]] if "file name" in col and col["file name"] < len(r) else None
            if name:
                originals.append(str(name).strip())
            if "patient id" in col and col["patient id"] < len(r):
                n = _patient_number(r[col["patient id"]])
                max_n = max(max_n, n or 0)
            if "doi" in col and col["doi"] < len(r) and r[col["doi"]] not in (None, ""):
                norm = doi_lib.normalize(r[col["doi"]])
                if norm:
                    dois.setdefault(paper_key(norm), str(name or "").strip())
    noncovid = metadata_dir / NONCOVID_SHEET
    if noncovid.is_file():
        with open(noncovid, encoding="utf-8-sig", newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("image name"):
                    originals.append(rec["image name"].strip())
                max_n = max(max_n, _patient_number(rec.get("patient id")) or 0)
    provenance = metadata_dir / PROVENANCE_FILE
    if provenance.is_file():
        with open(provenance, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("source_doi"):
                    dois.setdefault(paper_key(rec["source_doi"]), str(rec.get("new_file_name", "")))
                max_n = max(max_n, _patient_number(rec.get("dataset_patient_id")) or 0)

    splits: dict[str, dict[str, tuple[str, ...]]] = {}
    figure_splits: dict[tuple[str, str], str] = {}
    for sf in split_files(metadata_dir / SPLITS_DIR):
        listed = tuple(line.strip() for line in sf.path.read_text(encoding="utf-8").splitlines() if line.strip())
        splits.setdefault(sf.class_dir, {})[sf.split] = listed
        for entry in listed:
            originals.append(entry)
            figure_splits.setdefault((sf.class_dir, figure_key(entry)), sf.split)
    # A preprint cut into images is in the dataset even where its rows lack the DOI.
    for name in originals:
        pre = doi_lib.preprint_from_filename(name)
        if pre is not None:
            dois.setdefault(pre.doi, name)
    return DatasetState(
        data_root=data_root,
        metadata_dir=metadata_dir,
        class_files=class_files,
        taken_names=frozenset(n.casefold() for n in originals),
        dois=dois,
        max_patient_number=max_n,
        splits=splits,
        figure_splits=figure_splits,
    )
