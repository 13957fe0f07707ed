"""A read-only snapshot of what a dataset already holds, as far as a contribution must know it.

Owns what a contribution must know of the names, DOIs, patient numbering and split lists of a
dataset (images under the data root; sheets and split lists read by `core.dataset`; earlier
contributions' provenance log).
Writes nothing; `apply` does the writing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctcurate.doi import normalize as doi_lib
from ctcurate.core.dataset import read_key_rows, read_split_lines
from ctcurate.core.layout import IMAGES_DIR, SPLIT_NAMES, SPLITS_DIR, list_images

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


def paper_key(raw: object) -> str:
    """How DOIs are compared to tell "same paper": normalized, preprint version dropped."""
    return doi_lib.strip_version(doi_lib.normalize(raw))


def _patient_number(value: object) -> int | None:
    m = _PATIENT_N.match("" if value is None else str(value))
    return int(m.group(1)) if m else None


def read_state(data_root: Path, metadata_dir: Path) -> DatasetState:
    """Snapshot the dataset; raises OSError, or `SheetError` when a sheet or split list cannot be read."""
    class_files = {c: tuple(p.name for p in paths) for c, paths in list_images(data_root).items()} \
        if (data_root / IMAGES_DIR).is_dir() else {}
    originals = [n for names in class_files.values() for n in names]
    dois: dict[str, str] = {}
    max_n = 0
    for r in read_key_rows(metadata_dir):
        if r.file_name:
            originals.append(r.file_name)
        max_n = max(max_n, _patient_number(r.patient_id) or 0)
        if r.doi and (norm := doi_lib.normalize(r.doi)):
            dois.setdefault(paper_key(norm), r.file_name or "")
    for rec in _provenance(metadata_dir / PROVENANCE_FILE):
        if rec.get("source_doi"):
            dois.setdefault(paper_key(rec["source_doi"]), str(rec.get("new_file_name", "")))
        max_n = max(max_n, _patient_number(rec.get("dataset_patient_id")) or 0)
    splits: dict[str, dict[str, tuple[str, ...]]] = {}
    figure_splits: dict[tuple[str, str], str] = {}
    for line in read_split_lines(metadata_dir / SPLITS_DIR) if (metadata_dir / SPLITS_DIR).is_dir() else []:
        if line.name:
            per_class = splits.setdefault(line.class_dir, {})
            per_class[line.split] = (*per_class.get(line.split, ()), line.name)
            originals.append(line.name)
            figure_splits.setdefault((line.class_dir, figure_key(line.name)), line.split)
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


def _provenance(path: Path) -> list[dict[str, Any]]:
    """The records of earlier contributions' log (a line that is not JSON is skipped)."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records
