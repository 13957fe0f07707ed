"""`ctcurate validate`: the metadata sheets, split lists and images checked against each other.

Owns the cross-file checks (rows vs files on disk, split lists vs images, patients across splits,
image decoding and content type) and the plan of cell fixes that `--fix` writes. Row-level checks
live in `schemas`, file reading in `sheets`, writing in `fix`. Lazy: one pass reports everything.
Never prints, never exits.
"""

from __future__ import annotations

import difflib
import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from openpyxl.utils import range_boundaries

from ctcurate.core import layout
from ctcurate.core.pending import pending_findings
from ctcurate.core.findings import DEFAULT_LISTED_PER_CODE, CappedFindings, Finding, error, summarize, warning
from ctcurate.core.images import (
    UnreadableImage,
    format_of_suffix,
    open_image,
    sniff_format,
)
from ctcurate.doi import normalize as doi_lib
from ctcurate.validation.schemas import (
    COVID_COLUMNS,
    NONCOVID_COLUMNS,
    SAME_AS_ABOVE,
    CellValue,
    CovidKey,
    CovidRow,
    FindingSink,
    NonCovidKey,
    NonCovidRow,
    PatientIdRewrite,
    Record,
    SplitEntry,
    check_covid_rows,
    check_noncovid_rows,
    clean_text,
    covid_row_keys,
    noncovid_row_keys,
    parse_captions,
    patient_id_rewrites,
)
from ctcurate.core.dataset import read_split_lines
from ctcurate.core.sheets import SheetError, SheetRow, SheetStream, find_columns, open_sheet, read_sheet

if TYPE_CHECKING:  # doi_resolve (and requests) are imported only when validating online
    from ctcurate.doi.resolve import Resolution, Resolver

COVID_CLASS, NONCOVID_CLASS = layout.COVID_CLASS, layout.NONCOVID_CLASS
RowT = TypeVar("RowT")


class InputError(Exception):
    """The inputs cannot be validated at all (missing path, unreadable sheet); one-line message."""


@dataclass(frozen=True)
class CellFix:
    """One cell `--fix` rewrites: where, from what, to what, and the finding code it answers."""

    path: Path
    row: int
    column: str  # header text
    old: CellValue
    new: CellValue
    code: str


@dataclass(frozen=True)
class Inputs:
    """What one validation run looks at; None means that part is not checked."""

    covid_sheet: Path | None
    noncovid_sheet: Path | None
    splits_dir: Path | None
    data_root: Path | None
    metadata_is_file: bool = False


@dataclass(frozen=True)
class ValidationResult:
    """Every finding, their summary, the valid rows' keys, and the fixes `--fix` would write."""

    inputs: Inputs
    findings: list[Finding]
    summary: dict[str, object]
    covid_keys: list[CovidKey] = field(default_factory=list)
    noncovid_keys: list[NonCovidKey] = field(default_factory=list)
    split_entries: list[SplitEntry] = field(default_factory=list)
    fixes: list[CellFix] = field(default_factory=list)
    dois: dict[str, Resolution] = field(default_factory=dict)  # --online: each distinct DOI's answer

    @property
    def images_checked(self) -> bool:
        return self.inputs.data_root is not None

    @cached_property
    def covid_rows(self) -> list[CovidRow]:
        """The COVID sheet's valid rows as full models, read again when first asked for
        (validating keeps only their keys, so that a sheet of any size fits in memory)."""
        return _row_models(self.inputs.covid_sheet, COVID_COLUMNS, check_covid_rows)

    @cached_property
    def noncovid_rows(self) -> list[NonCovidRow]:
        """The NonCOVID sheet's valid rows as full models (see `covid_rows`)."""
        return _row_models(self.inputs.noncovid_sheet, NONCOVID_COLUMNS, check_noncovid_rows)


def _row_models(
    path: Path | None, columns: dict[str, str], check: Callable[..., tuple[list[RowT], list[Finding]]]
) -> list[RowT]:
    if path is None:
        return []
    sheet = read_sheet(path)
    cols, _ = find_columns(sheet, columns)
    return check(sheet.records(cols), file=sheet.path.name)[0]


def resolve_inputs(metadata: Path | None = None, images: Path | None = None, splits: Path | None = None) -> Inputs:
    """Find the sheets, split lists and image root; raise `InputError` when a given path is unusable.

    No `metadata`: the repository's embedded `metadata/`. No `images`: $CTCURATE_DATA, else images
    are not checked. No `splits`: `<metadata dir>/Data-split` when it exists.
    """
    meta = Path(metadata) if metadata is not None else layout.default_metadata_dir()
    covid = noncovid = None
    is_file = False
    if meta.is_file():
        is_file = True
        kind = sheet_kind(meta)
        covid, noncovid = (meta, None) if kind == "covid" else (None, meta)
        meta_dir = meta.parent
    elif meta.is_dir():
        meta_dir = meta
        covid = _first_existing(meta, layout.COVID_SHEET)
        noncovid = _first_existing(meta, layout.NONCOVID_SHEET)
        if covid is None and noncovid is None:
            raise InputError(f"{meta}: no {layout.COVID_SHEET} or {layout.NONCOVID_SHEET} there")
    else:
        raise InputError(f"{meta}: no such file or folder")
    splits_dir: Path | None = None
    if splits is not None:
        splits_dir = Path(splits)
        if not splits_dir.is_dir():
            raise InputError(f"{splits_dir}: no such folder")
    else:
        candidate = meta_dir / layout.SPLITS_DIR
        splits_dir = candidate if candidate.is_dir() else None
    data_root = None
    if images is not None or os.environ.get(layout.DATA_ENV):
        try:
            data_root = layout.resolve_data_root(images)
        except layout.DataRootNotFound as exc:
            raise InputError(str(exc)) from exc
    return Inputs(covid, noncovid, splits_dir, data_root, is_file)


def _first_existing(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_file() else None


def sheet_kind(path: Path) -> str:
    """`covid` or `noncovid`, from the header; raises `InputError` when it is neither."""
    try:
        sheet = read_sheet(path, header_only=True)
    except SheetError as exc:
        raise InputError(str(exc)) from exc
    keys = {" ".join(h.split()).casefold() for h in sheet.header}
    if "file name" in keys:
        return "covid"
    if "image name" in keys:
        return "noncovid"
    raise InputError(f"{path}: missing column(s) 'File name' (COVID sheet) or 'image name' (NonCOVID sheet)")


def validate(
    metadata: Path | None = None,
    images: Path | None = None,
    splits: Path | None = None,
    check_images: bool = True,
    plan_fixes: bool = False,
    resolver: Resolver | None = None,
    listed_per_code: int | None = DEFAULT_LISTED_PER_CODE,
) -> ValidationResult:
    """Validate everything the inputs name; raise `InputError` only when something cannot be read.

    `plan_fixes` also works out the cell fixes `--fix` writes (`ValidationResult.fixes`).
    `resolver` (online checks) also asks the registries about every DOI of the COVID sheet.
    At most `listed_per_code` findings of one code are listed per file (None: all); the rest are
    counted in one `findings.unlisted` each, so a sheet full of errors keeps memory bounded.
    """
    inputs = resolve_inputs(metadata, images, splits)
    cap = CappedFindings(listed_per_code)
    sheets, covid_rows, noncovid_rows, entries, findings = _read_inputs(inputs, cap)
    listed_before = len(findings)  # these went through `cap` as they were found; the rest go below
    meta_dir = None if inputs.metadata_is_file else next(p.parent for p in (inputs.covid_sheet, inputs.noncovid_sheet) if p)
    findings += pending_findings(inputs.data_root, meta_dir)

    on_disk = layout.list_images(inputs.data_root) if inputs.data_root else {}
    near_match = _NearMatcher()
    sheet_rows: dict[str, list[tuple[int, str, str, CellValue]]] = {
        COVID_CLASS: [(r.row, r.file_name, r.patient_id, r.raw_name) for r in covid_rows],
        NONCOVID_CLASS: [(r.row, r.image_name, r.patient_id, r.raw_name) for r in noncovid_rows],
    }
    row_names, file_findings, fixes = _match_all(sheets, sheet_rows, _universe(on_disk, entries, inputs.data_root is not None),
                                                 inputs.data_root is not None, near_match)
    findings += file_findings

    if inputs.data_root:
        findings += _disk_findings(inputs.data_root, on_disk, entries, inputs.splits_dir is not None, near_match, check_images)
    findings += _patient_leaks(sheets, sheet_rows, row_names, entries)
    dois: dict[str, Resolution] = {}
    if resolver is not None and COVID_CLASS in sheets:
        online, dois = _online_doi_checks(covid_rows, sheets[COVID_CLASS][0].path.name, resolver)
        findings += online

    if plan_fixes:
        fixes += _sheet_fixes(sheets, covid_rows, noncovid_rows)

    findings = _by_file_and_row(findings[:listed_before] + cap.keep(findings[listed_before:]) + cap.unlisted_findings())
    summary = summarize(findings) | {
        "images_checked": inputs.data_root is not None and check_images,
        "rows": {s.path.name: len(sheet_rows[c]) for c, (s, _) in sheets.items()},
        "images": sum(len(ps) for ps in on_disk.values()),
        "split_entries": len(entries),
    } | ({"dois_online": _answer_counts(dois)} if resolver is not None else {}) | (
        {"unlisted": cap.unlisted} if cap.unlisted else {})
    return ValidationResult(
        inputs=inputs,
        findings=findings,
        summary=summary,
        covid_keys=covid_rows,
        noncovid_keys=noncovid_rows,
        split_entries=entries,
        fixes=_dedupe(fixes) if plan_fixes else [],
        dois=dois,
    )


def _disk_findings(
    data_root: Path,
    on_disk: dict[str, list[Path]],
    entries: list[SplitEntry],
    splits_given: bool,
    near_match: _NearMatcher,
    check_images: bool,
) -> list[Finding]:
    """What only the image folders can tell: no images at all, stray files, split lists vs disk, bad images."""
    findings: list[Finding] = []
    if not any(on_disk.values()):
        findings.append(error("image.none", "no image in any class folder; nothing was checked",
                              file=f"{layout.IMAGES_DIR}/", hint="point --images at the folder holding "
                              f"{layout.IMAGES_DIR}/<class>/ with the images"))
    findings += _unexpected_files(data_root, on_disk)
    findings += _check_disk_vs_splits(on_disk, entries, splits_given, near_match)
    if check_images:
        findings += check_image_files(data_root, [p for ps in on_disk.values() for p in ps])
    return findings


def _sheet_fixes(
    sheets: dict[str, tuple[SheetStream, dict[str, str]]], covid_rows: list[CovidKey], noncovid_rows: list[NonCovidKey]
) -> list[CellFix]:
    """The cell fixes `--fix` writes beyond file names: cleaned cells, merged cells filled, patient IDs.

    Each sheet is streamed once more; only the rows the merged ranges and patient-ID rewrites
    need are kept whole, so planning fixes keeps memory bounded too.
    """
    fixes: list[CellFix] = []
    for class_dir, (info, cols) in sheets.items():
        covid = class_dir == COVID_CLASS
        rewrites = patient_id_rewrites(covid_rows if covid else noncovid_rows, not covid)
        wanted = {rw.row for rw in rewrites if rw.new is not None} | _merged_rows(info.merges)
        kept: dict[int, tuple[CellValue, ...]] = {}
        with open_sheet(info.path) as sheet:
            rows = (_keeping(r, wanted, kept) for r in sheet.rows)
            fixes += _cell_fixes(info.path, info.header, rows, cols, covid_rows if covid else None)
        fixes += _merged_fills(info, kept)
        fixes += _patient_id_fixes(info, cols["patient_id"], rewrites, kept)
    return fixes


def _merged_rows(merges: Iterable[str]) -> set[int]:
    """The rows of the one-column merged ranges (the ones `--fix` fills down)."""
    out: set[int] = set()
    for ref in merges:
        min_col, min_row, max_col, max_row = (int(b or 0) for b in range_boundaries(ref))
        if min_col == max_col:
            out.update(range(min_row, max_row + 1))
    return out


def _keeping(row: SheetRow, wanted: set[int], kept: dict[int, tuple[CellValue, ...]]) -> SheetRow:
    if row.number in wanted:
        kept[row.number] = row.values
    return row


def _read_inputs(
    inputs: Inputs, cap: CappedFindings
) -> tuple[dict[str, tuple[SheetStream, dict[str, str]]], list[CovidKey], list[NonCovidKey], list[SplitEntry], list[Finding]]:
    """Both sheets read and their rows checked, and the split lists; `InputError` when one cannot be read.

    Findings pass through `cap` as they are found, so a broken sheet of any size keeps few.
    """
    findings: list[Finding] = []
    covid_rows: list[CovidKey] = []
    noncovid_rows: list[NonCovidKey] = []
    sheets: dict[str, tuple[SheetStream, dict[str, str]]] = {}
    try:
        if inputs.covid_sheet is not None:
            sheets[COVID_CLASS], covid_rows = _read_checked(inputs.covid_sheet, COVID_COLUMNS, covid_row_keys, cap, findings)
        if inputs.noncovid_sheet is not None:
            sheets[NONCOVID_CLASS], noncovid_rows = _read_checked(
                inputs.noncovid_sheet, NONCOVID_COLUMNS, noncovid_row_keys, cap, findings)
        entries, split_findings = check_splits(inputs.splits_dir) if inputs.splits_dir else ([], [])
    except SheetError as exc:
        raise InputError(str(exc)) from exc
    return sheets, covid_rows, noncovid_rows, entries, findings + cap.keep(split_findings)


def _universe(on_disk: dict[str, list[Path]], entries: list[SplitEntry], on_disk_known: bool) -> dict[str, set[str]]:
    """The names each row and entry is checked against: the files on disk, else the split lists."""
    universe: dict[str, set[str]] = defaultdict(set)
    if on_disk_known:
        for class_dir, paths in on_disk.items():
            universe[class_dir] = {p.name for p in paths}
    else:
        for e in entries:
            universe[e.class_dir].add(e.file_name)
    return universe


def _match_all(
    sheets: dict[str, tuple[SheetStream, dict[str, str]]],
    sheet_rows: dict[str, list[tuple[int, str, str, CellValue]]],
    universe: dict[str, set[str]],
    check_disk: bool,
    near_match: _NearMatcher,
) -> tuple[dict[str, dict[int, str | None]], list[Finding], list[CellFix]]:
    """Each sheet's rows matched to the files they name: the resolved names, file findings and name fixes."""
    row_names: dict[str, dict[int, str | None]] = {}
    findings: list[Finding] = []
    fixes: list[CellFix] = []
    for class_dir, (sheet, cols) in sheets.items():
        name_col = cols["file_name" if class_dir == COVID_CLASS else "image_name"]
        resolved, file_findings, name_fixes = _match_rows(
            sheet, name_col, sheet_rows[class_dir], universe.get(class_dir, set()),
            check_disk=check_disk, class_dir=class_dir, near_match=near_match,
        )
        row_names[class_dir] = resolved
        findings += file_findings
        fixes += name_fixes
    return row_names, findings, fixes


def _read_checked(
    path: Path,
    columns: dict[str, str],
    check: Callable[[Iterable[Record], str | None, FindingSink], list[RowT]],
    cap: CappedFindings,
    findings: list[Finding],
) -> tuple[tuple[SheetStream, dict[str, str]], list[RowT]]:
    """One sheet streamed (`core.sheets`) and each row checked by its model and dropped, keeping
    its keys: the file's, header's and rows' findings go to `findings`, through `cap`."""
    row_findings: list[Finding] = []
    with open_sheet(path, cap=cap) as sheet:
        cols, header_findings = find_columns(sheet, columns)
        rows = check(sheet.records(cols), sheet.path.name, cap.collect(row_findings))
    findings += sheet.findings + cap.keep(header_findings) + row_findings  # the file's own are known at its end
    return (sheet, cols), rows


def _online_doi_checks(
    rows: list[CovidKey], file: str, resolver: Resolver
) -> tuple[list[Finding], dict[str, Resolution]]:
    """Every row's DOI (or the preprint DOI its file name gives) asked once of the registries."""
    from ctcurate.doi.resolve import (
        DoiRef,
        derived_ref,
        online_doi_findings,
        settle_derived,
    )

    refs = []
    for r in rows:
        if r.doi and doi_lib.is_valid(r.doi):  # malformed ones are already reported
            refs.append(DoiRef(doi=r.doi, file=file, row=r.row, column="DOI"))
        elif not r.doi and (derived := doi_lib.preprint_from_filename(r.file_name)):
            refs.append(derived_ref(derived, file=file, row=r.row, column="DOI"))
    refs = settle_derived(refs, resolver)
    findings = online_doi_findings(refs, resolver)
    return findings, resolver.resolve_many(ref.norm for ref in refs)


def _answer_counts(dois: dict[str, Resolution]) -> dict[str, int]:
    from ctcurate.doi.report import counts

    return counts(list({r.doi: r for r in dois.values()}.values()))  # `v2` forms share one answer


def _by_file_and_row(findings: list[Finding]) -> list[Finding]:
    """Group findings by file (in order of first appearance), rows ascending within a file."""
    rank: dict[str | None, int] = {}
    for f in findings:
        rank.setdefault(f.file, len(rank))
    return sorted(findings, key=lambda f: (rank[f.file], f.row or 0))


# --- splits ---------------------------------------------------------------------------------


def check_splits(splits_dir: Path) -> tuple[list[SplitEntry], list[Finding]]:
    """Every split-list line (`core.dataset`) as a `SplitEntry`, with whitespace and duplicate-line findings."""
    entries: list[SplitEntry] = []
    findings: list[Finding] = []
    findings += _absent_split_lists(splits_dir, list(layout.CLASS_LABELS))
    seen: dict[tuple[Path, str], int] = {}
    for line in read_split_lines(splits_dir):
        rel = f"{splits_dir.name}/{line.path.relative_to(splits_dir).as_posix()}"
        line_no, text = line.line, line.text
        name = clean_text(text) or ""
        if name != text:
            findings.append(
                warning(
                    "split.whitespace",
                    "stray whitespace around the file name",
                    file=rel,
                    row=line_no,
                    value=text,
                    hint=f"write it as {name!r}",
                )
            )
        if (line.path, name) in seen:
            findings.append(
                warning(
                    "split.duplicate",
                    f"listed again (first on line {seen[line.path, name]})",
                    file=rel,
                    row=line_no,
                    value=name,
                    hint="delete the repeated line",
                )
            )
            continue
        seen[line.path, name] = line_no
        entries.append(
            SplitEntry.model_validate(
                {"file_name": name, "split": line.split, "class_dir": line.class_dir, "list_file": rel, "line": line_no}
            )
        )
    return entries, findings


def _absent_split_lists(splits_dir: Path, class_dirs: list[str]) -> list[Finding]:
    """Each of the class x split lists that is not there, or is not a file."""
    findings = []
    for class_dir in class_dirs:
        for split in layout.SPLIT_NAMES:
            path = splits_dir / layout.label_of_class(class_dir) / f"{split}{class_dir}.txt"
            rel = f"{splits_dir.name}/{path.relative_to(splits_dir).as_posix()}"
            if path.is_file():
                continue
            if path.exists() or path.is_symlink():
                findings.append(error("split.list-not-a-file", "a folder or other non-file stands where this "
                                      "split list should be; it is not read", file=rel,
                                      hint="replace it by the text file of names"))
            else:
                findings.append(warning("split.list-missing", f"no {split} list for {class_dir}", file=rel,
                                      hint=f"create it (one file name of {layout.IMAGES_DIR}/{class_dir}/ per line)"))
    return findings


def _check_disk_vs_splits(
    on_disk: dict[str, list[Path]], entries: list[SplitEntry], have_splits: bool, near_match: _NearMatcher
) -> list[Finding]:
    findings: list[Finding] = []
    names = {c: {p.name for p in ps} for c, ps in on_disk.items()}
    where: dict[tuple[str, str], list[SplitEntry]] = defaultdict(list)
    for e in entries:
        where[(e.class_dir, e.file_name)].append(e)
        if e.file_name not in names.get(e.class_dir, set()):
            near = near_match(e.file_name, names.setdefault(e.class_dir, set()))
            findings.append(
                error(
                    "split.missing-file",
                    f"lists a file that is not in {layout.IMAGES_DIR}/{e.class_dir}/",
                    file=e.list_file,
                    row=e.line,
                    value=e.file_name,
                    hint=f"did you mean {near!r}?" if near else "remove the line or add the image",
                )
            )
    if not have_splits:
        return findings
    for class_dir, paths in on_disk.items():
        for p in paths:
            rel = f"{layout.IMAGES_DIR}/{class_dir}/{p.name}"
            hits = where.get((class_dir, p.name), [])
            if not hits:
                findings.append(
                    error(
                        "split.unassigned",
                        "image is in no split list",
                        file=rel,
                        value=p.name,
                        hint="add it to exactly one of train, val, test",
                    )
                )
            elif len({e.split for e in hits}) > 1:
                lists = ", ".join(f"{e.list_file}:{e.line}" for e in hits)
                findings.append(
                    error(
                        "split.multiple",
                        f"image is in more than one split ({lists})",
                        file=rel,
                        value=p.name,
                        hint="keep it in exactly one split",
                    )
                )
    return findings


def _unexpected_files(data_root: Path, on_disk: dict[str, list[Path]]) -> list[Finding]:
    """Files in a class folder that are not images by their extension, and entries that are not
    files at all (FIFOs, devices, looping links): they would silently drop out."""
    findings = [
        error("file.special", f"{what}, not an image file; it is not checked or used", file=rel,
              value=rel.rsplit("/", 1)[-1], hint="remove it or replace it by the image it stands for")
        for rel, what in layout.special_entries(data_root)
    ]
    for class_dir in on_disk:
        folder = data_root / layout.IMAGES_DIR / class_dir
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() not in layout.IMAGE_SUFFIXES:
                findings.append(
                    warning(
                        "file.not-image",
                        f"not an image by its extension ({path.suffix or 'none'}); it is not checked or used",
                        file=f"{layout.IMAGES_DIR}/{class_dir}/{path.name}",
                        value=path.name,
                        hint=f"convert it to one of {', '.join(layout.IMAGE_SUFFIXES)} "
                        "or move it out of the image folder",
                    )
                )
    return findings


# --- rows vs files --------------------------------------------------------------------------


def _fold(name: str) -> str:
    """Case- and Unicode-form-insensitive key (a macOS disk may hold NFD names, a sheet NFC)."""
    return unicodedata.normalize("NFC", name).casefold()


def _candidates(name: str, universe: set[str], lower: dict[str, list[str]]) -> list[str]:
    """Files a misspelled row name most likely means: extension added, case or Unicode form differing."""
    hits = [name + suffix for suffix in layout.IMAGE_SUFFIXES if name + suffix in universe]
    if not hits:
        hits = lower.get(_fold(name), [])
    if not hits:
        hits = [n for s in layout.IMAGE_SUFFIXES for n in lower.get(_fold(name + s), [])]
    return sorted(set(hits))


class _NearMatcher:
    """difflib suggestions for misspelled names, with a budget: a sheet of 100,000 wrong names
    must not cost 100,000 fuzzy searches (past the budget a finding just has no suggestion)."""

    def __init__(self, budget: int = 1000) -> None:
        self.left = budget
        self._lists: dict[int, list[str]] = {}

    def __call__(self, name: str, universe: set[str]) -> str | None:
        if self.left <= 0 or not universe or len(universe) >= 20000:
            return None
        self.left -= 1
        names = self._lists.setdefault(id(universe), sorted(universe))
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
        return close[0] if close else None


def _match_rows(
    sheet: SheetStream,
    name_col: str,
    rows: list[tuple[int, str, str, CellValue]],
    universe: set[str],
    check_disk: bool,
    class_dir: str,
    near_match: _NearMatcher,
) -> tuple[dict[int, str | None], list[Finding], list[CellFix]]:
    """Which file each row describes; `file.missing` / `file.no-row` when checking the disk."""
    lower: dict[str, list[str]] = defaultdict(list)
    for n in universe:
        lower[_fold(n)].append(n)
    resolved: dict[int, str | None] = {}
    findings: list[Finding] = []
    fixes: list[CellFix] = []
    label = sheet.path.name
    claimed_by: dict[str, int] = {}
    for number, name, _patient, _raw in rows:
        if name in universe:
            claimed_by.setdefault(name, number)
    for number, name, _patient, raw_name in rows:
        if name in universe:
            resolved[number] = name
            continue
        hits = _candidates(name, universe, lower) if universe else []
        if len(hits) == 1 and hits[0] in claimed_by:
            resolved[number] = None
            findings.append(_same_image(label, number, name_col, name, hits[0], claimed_by[hits[0]]))
            continue
        resolved[number] = hits[0] if len(hits) == 1 else None
        if len(hits) == 1:
            claimed_by[hits[0]] = number
            fixes.append(CellFix(sheet.path, number, name_col, raw_name, hits[0], "file.missing"))
        if not check_disk:
            continue
        findings.append(
            error(
                "file.missing",
                f"no file {name!r} in {layout.IMAGES_DIR}/{class_dir}/",
                file=label,
                row=number,
                column=name_col,
                value=name,
                hint=_missing_file_hint(name, hits, universe, class_dir, near_match),
            )
        )
    if check_disk:
        findings += _files_without_row(label, class_dir, universe, resolved)
    return resolved, findings, fixes


def _missing_file_hint(
    name: str, hits: list[str], universe: set[str], class_dir: str, near_match: _NearMatcher
) -> str:
    """What to do about a row naming no file: the one match, the several, a close spelling, or add it."""
    if len(hits) == 1:
        return f"the file is {hits[0]!r}: write the full name (ctcurate validate --fix does)"
    if hits:
        return f"several files match: {', '.join(hits)}"
    near = near_match(name, universe)
    return f"did you mean {near!r}?" if near else f"add the image to {layout.IMAGES_DIR}/{class_dir}/ or fix the name"


def _files_without_row(
    label: str, class_dir: str, universe: set[str], resolved: dict[int, str | None]
) -> list[Finding]:
    """`file.no-row`: images on disk that no row of the sheet describes, by name."""
    claimed = {n for n in resolved.values() if n}
    return [
        error(
            "file.no-row",
            f"image has no row in {label}",
            file=f"{layout.IMAGES_DIR}/{class_dir}/{n}",
            value=n,
            hint=f"add a row for it to {label}",
        )
        for n in sorted(universe - claimed)
    ]


def _same_image(label: str, number: int, column: str, name: str, image: str, other: int) -> Finding:
    """A row whose name, completed, is the image another row already describes."""
    return error(
        "file.duplicate",
        f"names the image {image!r}, which row {other} already describes",
        file=label,
        row=number,
        column=column,
        value=name,
        hint="each image gets exactly one row: correct this row's file name "
        "(its own image is then the one reported as having no row)",
    )


# --- patients across splits -----------------------------------------------------------------


def _patient_leaks(
    sheets: dict[str, tuple[SheetStream, dict[str, str]]],
    sheet_rows: dict[str, list[tuple[int, str, str, CellValue]]],
    row_names: dict[str, dict[int, str | None]],
    entries: list[SplitEntry],
) -> list[Finding]:
    split_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in entries:
        split_of[(e.class_dir, e.file_name)].add(e.split)
    findings = []
    for class_dir, (sheet, cols) in sheets.items():
        by_patient: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        first_row: dict[str, int] = {}
        for number, name, patient, _raw in sheet_rows[class_dir]:
            file_name = row_names.get(class_dir, {}).get(number) or name
            first_row.setdefault(patient, number)
            for split in split_of.get((class_dir, file_name), ()):
                by_patient[patient][split].append(file_name)
        for patient, splits in by_patient.items():
            if len(splits) < 2:
                continue
            parts = "; ".join(
                f"{s}: {', '.join(sorted(files)[:3])}{' ...' if len(files) > 3 else ''}"
                for s, files in sorted(splits.items(), key=lambda kv: layout.SPLIT_NAMES.index(kv[0]))
            )
            findings.append(
                error(
                    "split.patient-leak",
                    f"{patient} has images in {len(splits)} splits ({parts})",
                    file=sheet.path.name,
                    row=first_row[patient],
                    column=cols["patient_id"],
                    value=patient,
                    hint="move all of this patient's images into one split",
                )
            )
    return findings


# --- images ---------------------------------------------------------------------------------


def check_image_files(data_root: Path, paths: Iterable[Path]) -> list[Finding]:
    """Full decode of every image and its content type against its extension."""
    findings = []
    for path in paths:
        try:
            rel = path.relative_to(data_root).as_posix()
        except ValueError:
            rel = str(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            findings.append(error("image.unreadable", f"cannot read: {exc.strerror}", file=rel, value=path.name))
            continue
        content = sniff_format(head)
        try:
            open_image(path)
        except UnreadableImage as exc:
            findings.append(
                error(
                    "image.unreadable",
                    exc.reason,
                    file=rel,
                    value=path.name,
                    hint="re-export the image from its source figure",
                )
            )
            continue
        expected = format_of_suffix(path)
        if content and expected and content != expected:
            proper = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}[content]
            findings.append(
                warning(
                    "image.format-mismatch",
                    f"a {path.suffix} file holding {content.upper()} data",
                    file=rel,
                    value=path.name,
                    hint=f"convert it to {expected.upper()} or rename it to {path.stem}{proper} "
                    "(and update the sheet and split lists)",
                )
            )
    return findings


# --- fixes ----------------------------------------------------------------------------------


def _cell_fixes(
    path: Path, header: tuple[str, ...], rows: Iterable[SheetRow], cols: dict[str, str], covid_rows: list[CovidKey] | None
) -> list[CellFix]:
    """Whitespace, `same as above`, DOIs and broken caption lists: what `--fix` rewrites."""
    fixes: list[CellFix] = []
    index = {canon: header.index(head) for canon, head in cols.items()}
    above: dict[str, CellValue] = {}
    keys = iter(covid_rows or [])  # in row order, as the rows stream
    key = next(keys, None)
    for row in rows:
        cells = {canon: row.values[i] if i < len(row.values) else None for canon, i in index.items()}

        def cell(canon: str, cells: dict[str, CellValue] = cells) -> CellValue:
            return cells[canon]

        current: dict[str, CellValue] = {}
        for canon, head in cols.items():
            old = cell(canon)
            new: CellValue = old
            code = ""
            if isinstance(old, str) and old.strip().casefold() in SAME_AS_ABOVE and above.get(canon) is not None:
                new, code = above[canon], "cell.same-as-above"
            elif isinstance(old, str) and canon not in ("doi", "captions"):
                new, code = clean_text(old), "cell.whitespace"
                if canon == "gender" and new and new.upper() in ("M", "F"):
                    new = new.upper()
                if canon == "age" and new and new.isascii() and new.isdigit():
                    new = int(new)
            current[canon] = new
            if code and new != old:
                fixes.append(CellFix(path, row.number, head, old, new, code))
        if any(v is not None for v in current.values()):
            above = current
        if covid_rows is None:
            continue
        while key is not None and key.row < row.number:
            key = next(keys, None)
        model = key if key is not None and key.row == row.number else None
        raw_doi = cell("doi")
        if model is not None:
            parsed = doi_lib.parse(raw_doi)
            derived = doi_lib.preprint_from_filename(model.file_name)
            if raw_doi is None or not str(raw_doi).strip():
                if derived and not derived.alternatives:  # near the prefix change only the registry knows
                    fixes.append(CellFix(path, row.number, cols["doi"], raw_doi, derived.doi, "doi.derivable"))
            elif parsed.valid and parsed.repairs:  # a case difference alone is no defect: left as written
                fixes.append(CellFix(path, row.number, cols["doi"], raw_doi, parsed.doi, "doi.whitespace"))
            raw_captions = cell("captions")
            captions, malformed = parse_captions(raw_captions)
            if malformed:
                fixes.append(
                    CellFix(path, row.number, cols["captions"], raw_captions, repr(captions), "captions.malformed")
                )
    return fixes


def _merged_fills(sheet: SheetStream, values: dict[int, tuple[CellValue, ...]]) -> list[CellFix]:
    """`--fix` fills a merged range of one column down: each covered cell gets the range's value.

    A range across columns is left merged (which of its columns the value belongs to needs a person).
    `values`: the cells of the rows those ranges cover.
    """
    fixes = []
    for ref in sheet.merges:
        min_col, min_row, max_col, max_row = (int(b or 0) for b in range_boundaries(ref))
        if min_col != max_col or min_row not in values or not 0 < min_col <= len(sheet.header):
            continue
        head = sheet.header[min_col - 1]
        top = values[min_row]
        value = top[min_col - 1] if min_col <= len(top) else None
        if not head.strip() or value is None:
            continue
        for number in range(min_row + 1, max_row + 1):
            if number in values:
                fixes.append(CellFix(sheet.path, number, head, None, value, "sheet.merged-cells"))
    return fixes


def _patient_id_fixes(
    sheet: SheetStream, column: str, rewrites: list[PatientIdRewrite], raw: dict[int, tuple[CellValue, ...]]
) -> list[CellFix]:
    """Patient IDs rewritten to the dataset's form, where that is unambiguous (`raw`: their rows' cells)."""
    index = sheet.header.index(column)
    fixes = []
    for rw in rewrites:
        if rw.new is not None:
            vals = raw.get(rw.row, ())
            old = vals[index] if index < len(vals) else None
            fixes.append(CellFix(sheet.path, rw.row, column, old, rw.new, "patient.id-form"))
    return fixes


# A fix that decides what a cell means wins over one that only tidies it (whitespace), and a
# merged range's fill-down only writes cells no other fix writes.
_FIX_RANK = {"file.missing": 2, "patient.id-form": 2, "sheet.merged-cells": 0}


def _dedupe(fixes: list[CellFix]) -> list[CellFix]:
    """One fix per cell: the highest-ranked one (see `_FIX_RANK`; others rank 1)."""
    out: dict[tuple[Path, int, str], CellFix] = {}
    for f in fixes:
        key = (f.path, f.row, f.column)
        if key not in out or _FIX_RANK.get(f.code, 1) > _FIX_RANK.get(out[key].code, 1):
            out[key] = f
    return sorted(out.values(), key=lambda f: (str(f.path), f.row, f.column))
