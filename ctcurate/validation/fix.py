"""Writing the normalized copy `ctcurate validate --fix OUT` produces; the input is never touched.

Owns turning a list of `CellFix` into files: an .xlsx is edited cell by cell through openpyxl so
its other sheets and styles stay, a .csv is rewritten in its own encoding and line ending, split
lists are copied with whitespace removed. Every file is written atomically. `validate_copy` then
validates what was written, so the command can say what the copy still has.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.cell import MergedCell

from ctcurate.core import layout
from ctcurate.core.atomic import WouldOverwrite, atomic_path, atomic_write, refuse_existing, refuse_inputs
from ctcurate.core.sheets import XLSX_SUFFIXES, SheetError, decode_text
from ctcurate.validation.checks import CellFix, ValidationResult


class FixError(Exception):
    """The copy cannot be written (it would overwrite the input, or the target is unusable)."""


@dataclass(frozen=True)
class FixReport:
    """What was written: each output file and how many cells changed in it."""

    written: dict[Path, int]


def write_fixed(result: ValidationResult, out: Path, force: bool = False) -> FixReport:
    """Write the normalized copy of what `result` validated to `out` (a file or a folder).

    Every target is checked before the first byte is written: none may be an input, and an existing
    non-empty `out` is refused unless `force` (`WouldOverwrite`).
    """
    inputs = result.inputs
    out = Path(out)
    sources = [p for p in (inputs.covid_sheet, inputs.noncovid_sheet) if p is not None]
    by_file: dict[Path, list[CellFix]] = defaultdict(list)
    for fx in result.fixes:
        by_file[fx.path].append(fx)
    targets: dict[Path, Path] = {}
    if inputs.metadata_is_file:
        src = sources[0]
        if out.exists() and out.is_dir():
            out = out / src.name
        if out.suffix.lower() != src.suffix.lower():
            raise FixError(f"{out}: the copy must keep the input's format ({src.suffix})")
        targets[src] = out
    else:
        if out.exists() and not out.is_dir():
            raise FixError(f"{out}: exists and is not a folder (the input is a folder)")
        for src in sources:
            targets[src] = out / src.name
    split_lists: dict[Path, Path] = {}
    if not inputs.metadata_is_file and inputs.splits_dir is not None:
        for path in sorted(inputs.splits_dir.rglob("*.txt")):
            split_lists[path] = out / layout.SPLITS_DIR / path.relative_to(inputs.splits_dir)
    every_input = [*sources, *split_lists]
    try:
        refuse_inputs([*targets.values(), *split_lists.values()], every_input, "--fix")
        refuse_existing(out, force)
    except WouldOverwrite as exc:
        raise FixError(str(exc)) from exc
    written: dict[Path, int] = {}
    for src, dst in targets.items():
        fixes = by_file.get(src, [])
        if src.suffix.lower() in XLSX_SUFFIXES:
            _fix_xlsx(src, dst, fixes)
        else:
            _fix_csv(src, dst, fixes)
        written[dst] = len(fixes)
    for path, dst in split_lists.items():
        written[dst] = _fix_split_list(path, dst)
    return FixReport(written)


def _fix_xlsx(src: Path, dst: Path, fixes: list[CellFix]) -> None:
    try:
        wb = load_workbook(src)
    except Exception as exc:  # openpyxl raises many types for a damaged file
        raise FixError(f"{src}: cannot be loaded for fixing ({exc})") from exc
    visible = [ws for ws in wb.worksheets if ws.sheet_state == "visible"] or wb.worksheets
    ws = visible[0]
    header = {str(c.value).strip(): c.column for c in ws[1] if c.value is not None}
    header_first_row = _header_row(ws)
    if header_first_row != 1:
        header = {str(c.value).strip(): c.column for c in ws[header_first_row] if c.value is not None}
    for fx in fixes:
        col = header.get(fx.column.strip())
        if col is None:
            continue
        cell = ws.cell(row=fx.row, column=col)
        if isinstance(cell, MergedCell) and not _unmerge_column_range(ws, cell.coordinate):
            continue  # covered by a merge across columns: left as is, the value lives in its first cell
        ws.cell(row=fx.row, column=col).value = fx.new
    with atomic_path(dst) as tmp:
        wb.save(tmp)


def _unmerge_column_range(ws: Any, coordinate: str) -> bool:
    """Unmerge the one-column range covering `coordinate` (its cells are then filled by fixes)."""
    for rng in list(ws.merged_cells.ranges):
        if coordinate in rng:
            if rng.min_col != rng.max_col:
                return False
            ws.unmerge_cells(str(rng))
            return True
    return False


def _header_row(ws: object) -> int:
    for row in ws.iter_rows():  # type: ignore[attr-defined]
        if any(c.value is not None for c in row):
            return int(row[0].row)
    return 1


def _fix_csv(src: Path, dst: Path, fixes: list[CellFix]) -> None:
    data = src.read_bytes()
    try:
        text, encoding = decode_text(src, data)
    except SheetError as exc:
        raise FixError(str(exc)) from exc
    newline = "\r\n" if "\r\n" in text else "\n"
    records = list(csv.reader(io.StringIO(text, newline="")))
    header_at = next((i for i, r in enumerate(records) if any(v != "" for v in r)), 0)
    header = records[header_at] if records else []
    index = {h.strip(): i for i, h in enumerate(header)}
    for fx in fixes:
        i = index.get(fx.column.strip())
        r = fx.row - 1
        if i is None or r >= len(records):
            continue
        while len(records[r]) <= i:
            records[r].append("")
        records[r][i] = "" if fx.new is None else str(fx.new)
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerows(records)
    with atomic_write(dst, "w", encoding=encoding) as fh:
        fh.write(buf.getvalue())


def _fix_split_list(src: Path, dst: Path) -> int:
    """Copy a split list with names stripped, blank and repeated lines dropped; returns lines changed."""
    text, encoding = decode_text(src, src.read_bytes())
    kept: dict[str, None] = {}
    changed = 0
    for line in text.splitlines():
        name = line.strip()
        if not name or name in kept:
            changed += 1
            continue
        changed += name != line
        kept[name] = None
    with atomic_write(dst, "w", encoding=encoding) as fh:
        fh.write("".join(f"{name}\n" for name in kept))
    return changed


def validate_copy(result: ValidationResult, report: FixReport, out: Path) -> ValidationResult:
    """Validate the copy just written, against the same images and split lists: what `--fix` left."""
    from ctcurate.validation.checks import validate

    inputs = result.inputs
    if inputs.metadata_is_file:
        return validate(next(iter(report.written)), inputs.data_root, inputs.splits_dir)
    return validate(Path(out), inputs.data_root, None)
