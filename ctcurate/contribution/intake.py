"""Judging a contribution against a dataset: a per-file accept/reject verdict and the plan to apply.

Owns the intake rules (rows valid, images present and decodable, every image has a row, DOI new to
the dataset and agreeing with preprint file names, no duplicate of a dataset image or of another
contributed image, one dataset patient per contributed patient, collision-free names, splits).
Writes nothing. Row checks and duplicate search come in through two seams (`RowChecker`,
`DuplicateFinder`) so the rules never care how `validate` or `check-leakage` do their work.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from ctcurate.doi import normalize as doi_lib
from ctcurate.contribution.source import Contribution, ContributionRow, Label, SheetRow
from ctcurate.contribution.dataset_state import DatasetState, figure_key, paper_key
from ctcurate.core.findings import Finding, Severity, error, has_errors, warning
from ctcurate.leakage.hashing import file_sha256
from ctcurate.core.images import sniff_format
from ctcurate.core.layout import COVID_CLASS, NONCOVID_CLASS
from ctcurate.contribution.split_assign import Item, assign

LABEL_CLASS = {Label.COVID.value: COVID_CLASS, Label.NonCOVID.value: NONCOVID_CLASS}

# Rows in, findings out (with `row` as Excel shows it and `file` = the sheet's name).
RowChecker = Callable[[Sequence[SheetRow], str], list[Finding]]


@dataclass(frozen=True)
class Duplicates:
    """What the leakage machinery found for a set of new images."""

    of_existing: Mapping[Path, tuple[Path, ...]]  # new image -> dataset images it duplicates, best first
    within: tuple[tuple[Path, ...], ...] = ()  # groups of new images that duplicate each other
    findings: tuple[Finding, ...] = ()  # about the search itself (a damaged cache rebuilt): warnings


# (new image paths, dataset root) -> Duplicates
DuplicateFinder = Callable[[Sequence[Path], Path], Duplicates]


@dataclass(frozen=True)
class Decision:
    """The verdict on one contributed image (or on a row whose image is missing)."""

    source: str  # path inside the contribution, or the row's file name when the image is missing
    row: int | None
    accepted: bool
    findings: tuple[Finding, ...] = ()
    collides_with: str | None = None  # the existing file, contributed file or DOI it collides with
    label: str | None = None
    class_dir: str | None = None
    doi: str | None = None
    contributor_patient: str | None = None
    dataset_patient: str | None = None
    new_name: str | None = None
    split: str | None = None
    sha256: str | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.code for f in self.findings if f.severity is Severity.ERROR))


@dataclass(frozen=True)
class IntakePlan:
    """Everything `apply` needs, and everything the report shows."""

    decisions: tuple[Decision, ...]
    findings: tuple[Finding, ...] = ()  # about the contribution as a whole (zip, sheet, columns)
    patient_map: dict[str, str] = field(default_factory=dict)  # contributor ID -> dataset ID
    rows: dict[str, SheetRow] = field(default_factory=dict)  # source -> its sheet row (accepted only)
    images: dict[str, Path] = field(default_factory=dict)  # source -> file to copy (accepted only)

    @property
    def accepted(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.accepted)

    @property
    def rejected(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.accepted)

    @property
    def all_accepted(self) -> bool:
        return bool(self.decisions) and not self.rejected and not has_errors(self.findings)


def model_row_checker(rows: Sequence[SheetRow], sheet_name: str) -> list[Finding]:
    """Contribution-specific checks: the `ContributionRow` model (required cells, Label) and the DOI."""
    out: list[Finding] = []
    for r in rows:
        where = {"file": sheet_name, "row": r.row}
        data = {k: (v.strip() if isinstance(v, str) else v) for k, v in r.values.items() if v is not None}
        try:
            ContributionRow.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                column = str(e["loc"][0]) if e["loc"] else None
                if column == "Label":
                    out.append(error("label.invalid", "Label must be COVID or NonCOVID", column=column,
                                     value=r.text("Label") or None, **where))
                elif e["type"] == "missing":
                    out.append(error("cell.missing", f"{column!r} is required", column=column, **where))
                else:
                    out.append(error("cell.invalid", e["msg"], column=column, value=r.text(column or "") or None, **where))
        if r.text("DOI").strip():
            out.extend(doi_lib.check_doi(r.text("DOI"), r.text("File name").strip() or None, column="DOI", **where))
    return out


def metainfo_row_checker(rows: Sequence[SheetRow], sheet_name: str) -> list[Finding]:
    """The dataset sheet's own row checks (`ctcurate validate`'s), run on the contribution's rows."""
    from ctcurate.validation.schemas import COVID_COLUMNS, check_covid_rows

    field_of = {header: name for name, header in COVID_COLUMNS.items()}
    records = [(r.row, {field_of[c]: _cell(v) for c, v in r.values.items() if c in field_of}) for r in rows]
    _, found = check_covid_rows(records, sheet_name)
    return found


def _cell(value: object) -> str | int | float | bool | None:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def combine_checkers(*checkers: RowChecker) -> RowChecker:
    """One checker running all, each finding once (two checkers may both check the DOI)."""

    def run(rows: Sequence[SheetRow], sheet_name: str) -> list[Finding]:
        seen: set[tuple[object, ...]] = set()
        out: list[Finding] = []
        for check in checkers:
            for f in check(rows, sheet_name):
                key = (f.code, f.row, f.column, f.value)
                if key not in seen:
                    seen.add(key)
                    out.append(f)
        return out

    return run


def patient_key(raw: str) -> str:
    """How contributed patient IDs are compared: `Patient 1`, `patient 1 ` and `PATIENT  1` are one patient."""
    return re.sub(r"\s+", " ", raw.strip()).casefold()



def _match_images(contribution: Contribution) -> tuple[dict[int, str], list[Finding]]:
    """Row number -> image key, matching the sheet's file name to a path or a unique base name."""
    by_rel = {k.casefold(): k for k in contribution.images}
    by_base: dict[str, list[str]] = defaultdict(list)
    by_stem: dict[str, list[str]] = defaultdict(list)
    for key in contribution.images:
        base = key.rsplit("/", 1)[-1]
        by_base[base.casefold()].append(key)
        by_stem[base.rsplit(".", 1)[0].casefold()].append(key)
    out: dict[int, str] = {}
    findings: list[Finding] = []
    sheet = contribution.sheet_name()
    for r in contribution.rows:
        name = r.text("File name").strip().replace("\\", "/")
        if not name:
            continue
        folded = name.casefold()
        hit = by_rel.get(folded) or (by_base[folded][0] if len(by_base.get(folded, [])) == 1 else None)
        if hit is None and len(by_stem.get(folded, [])) == 1:
            hit = by_stem[folded][0]
            findings.append(warning("file.name-without-extension", f"matched to {hit.rsplit('/', 1)[-1]!r}",
                                    file=sheet, row=r.row, column="File name", value=name))
        if hit is None and len(by_base.get(folded, [])) > 1:
            findings.append(error("file.ambiguous", "several images in the contribution have this name",
                                  file=sheet, row=r.row, column="File name", value=name))
        if hit is not None:
            out[r.row] = hit
    return out, findings


def _free_name(name: str, taken: set[str]) -> str:
    """`name`, or `stem_2.ext`, `stem_3.ext`, ... : the first not taken (case-insensitively)."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, k = name, 1
    while candidate.casefold() in taken:
        k += 1
        candidate = f"{stem}_{k}{dot}{ext}"
    return candidate


_SUFFIX_OF = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def plan_intake(
    contribution: Contribution,
    state: DatasetState,
    *,
    check_rows: RowChecker,
    find_duplicates: DuplicateFinder,
    split_mode: str = "auto",
) -> IntakePlan:
    """Judge every contributed file; plan names, patients and splits for the accepted ones."""
    if not contribution.usable:
        return _refused(contribution)
    judging = _sources(contribution, check_rows)
    _check_images(judging)
    _check_dois(judging, state)
    _check_duplicates(judging, state, find_duplicates)
    _check_patient_labels(judging)
    decisions = _place(_verdicts(judging), judging, state, split_mode)
    ordered = tuple(sorted(decisions.values(), key=lambda d: (d.row is None, d.row or 0, d.source)))
    return IntakePlan(
        decisions=ordered,
        findings=tuple(judging.general),
        patient_map={d.contributor_patient or "": d.dataset_patient or "" for d in ordered if d.accepted},
        rows={d.source: judging.rows_by_number[d.row] for d in ordered if d.accepted and d.row is not None},
        images={d.source: contribution.images[d.source] for d in ordered if d.accepted},
    )


def _refused(contribution: Contribution) -> IntakePlan:
    """An unusable contribution (bad zip, no sheet, ...): every image is rejected with it."""
    refused = tuple(
        Decision(source=key, row=None, accepted=False,
                 findings=(error("contribution.refused", "the contribution as a whole was refused", file=key),))
        for key in sorted(contribution.images)
    )
    return IntakePlan(refused, contribution.findings)


@dataclass
class _Judging:
    """What `plan_intake` learns about each source (an image, or a row naming no image), step by step."""

    contribution: Contribution
    sheet: str
    rows_by_number: dict[int, SheetRow]
    sources: list[str] = field(default_factory=list)
    row_of: dict[str, int | None] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=lambda: defaultdict(list))
    general: list[Finding] = field(default_factory=list)  # about the contribution as a whole
    collides: dict[str, str] = field(default_factory=dict)  # source -> the DOI or file it collides with
    shas: dict[str, str] = field(default_factory=dict)
    decodable: list[str] = field(default_factory=list)
    proper_suffix: dict[str, str] = field(default_factory=dict)  # stored under the extension its content has
    doi_of: dict[str, str] = field(default_factory=dict)

    def row(self, src: str) -> SheetRow | None:
        at = self.row_of.get(src)
        return self.rows_by_number.get(at) if at is not None else None


def _sources(contribution: Contribution, check_rows: RowChecker) -> _Judging:
    """Every image and every row naming no image, with the row findings that belong to each."""
    sheet = contribution.sheet_name()
    judging = _Judging(contribution, sheet, {r.row: r for r in contribution.rows}, general=list(contribution.findings))
    row_of_image, match_findings = _match_images(contribution)
    by_row: dict[int, list[Finding]] = defaultdict(list)
    for f in check_rows(contribution.rows, sheet) + match_findings:
        (by_row[f.row] if f.row is not None and f.row > 1 else judging.general).append(f)
    image_rows: dict[str, list[int]] = defaultdict(list)
    for number, key in row_of_image.items():
        image_rows[key].append(number)
    for r in contribution.rows:
        name = r.text("File name").strip()
        if r.row in row_of_image or not name:
            continue  # an empty name: the model checker already reports the missing cell
        judging.sources.append(name)
        judging.row_of[name] = r.row
        judging.findings[name].extend(by_row.get(r.row, []))
        if not any(f.code == "file.ambiguous" for f in by_row.get(r.row, [])):
            judging.findings[name].append(error("file.missing", "the sheet names an image that is not in the contribution",
                                                file=sheet, row=r.row, column="File name", value=name))
    for key in sorted(contribution.images):
        _add_image(judging, key, sorted(image_rows.get(key, [])), by_row)
    # Findings of rows that name no file at all belong to the contribution as a whole.
    attached = {n for n in judging.row_of.values() if n is not None} | {n for ns in image_rows.values() for n in ns}
    for number in sorted(set(by_row) - attached):
        judging.general.extend(by_row[number])
    return judging


def _add_image(judging: _Judging, key: str, numbers: list[int], by_row: Mapping[int, list[Finding]]) -> None:
    """One contributed image as a source: its row (the first naming it) and that row's findings."""
    judging.sources.append(key)
    judging.row_of[key] = numbers[0] if numbers else None
    findings = judging.findings[key]
    if not numbers:
        findings.append(error("file.no-row", "the image has no row in the sheet", file=key,
                              hint=f"add a row with File name {key.rsplit('/', 1)[-1]!r}"))
        return
    findings.extend(by_row.get(numbers[0], []))
    for extra in numbers[1:]:
        findings.append(error("row.duplicate-file", f"rows {numbers[0]} and {extra} name the same image",
                              file=judging.sheet, row=extra, column="File name"))
    if _BAD_NAME.search(key.rsplit("/", 1)[-1]):
        findings.append(error("file.bad-name", "file name holds control characters or slashes", file=key))


def _check_images(judging: _Judging) -> None:
    """validate's own image checks (full decode with bomb limits, content vs extension)."""
    from ctcurate.validation.checks import check_image_files

    contribution = judging.contribution
    root = contribution.root or contribution.source
    for key, path in sorted(contribution.images.items()):
        image_findings = check_image_files(root, [path])
        if has_errors(image_findings):
            judging.findings[key].extend(image_findings)
            continue
        for f in image_findings:
            if f.code == "image.format-mismatch":
                with open(path, "rb") as fh:
                    content = sniff_format(fh.read(16))
                judging.proper_suffix[key] = _SUFFIX_OF.get(content or "", path.suffix)
                f = f.model_copy(update={"hint": f"it is stored under the {judging.proper_suffix[key]} extension"})
            judging.findings[key].append(f)
        judging.shas[key] = file_sha256(path)
        judging.decodable.append(key)


def _check_dois(judging: _Judging, state: DatasetState) -> None:
    """A contributed paper must be new to the dataset (DOIs compared normalized)."""
    for src in judging.sources:
        row = judging.row(src)
        norm = doi_lib.normalize(row.text("DOI")) if row else ""
        if row is None or not norm:
            continue
        judging.doi_of[src] = norm
        if paper_key(norm) in state.dois:
            example = state.dois[paper_key(norm)]
            judging.findings[src].append(error("doi.in-dataset", "the paper is already in the dataset",
                                               file=judging.sheet, row=row.row, column="DOI", value=row.text("DOI"),
                                               hint=f"{norm} is cited by {example}" if example else None))
            judging.collides[src] = norm


def _check_duplicates(judging: _Judging, state: DatasetState, find_duplicates: DuplicateFinder) -> None:
    """Duplicates of dataset images, and the same picture twice in the contribution (the first clean one is kept)."""
    if not judging.decodable:
        return
    images = judging.contribution.images
    dup = find_duplicates([images[k] for k in judging.decodable], state.data_root)
    key_of = {images[k]: k for k in judging.decodable}
    judging.general += [f for f in dup.findings if f.severity is Severity.WARNING]
    for path, existing in dup.of_existing.items():
        hit = key_of.get(path)
        if hit is None or not existing:
            continue
        rels = [_dataset_rel(p, state.data_root) for p in existing]  # best match first
        more = f" (and {len(rels) - 1} more)" if len(rels) > 1 else ""
        judging.findings[hit].append(error("image.duplicate", f"duplicates {rels[0]}{more}", file=hit, value=", ".join(rels)))
        judging.collides.setdefault(hit, rels[0])
    for group in dup.within:
        keys = sorted(key_of[p] for p in group if p in key_of)
        clean = [k for k in keys if not has_errors(judging.findings[k])]
        keep = clean[0] if clean else keys[0] if keys else None
        for k in keys:
            if k != keep:
                judging.findings[k].append(error("image.duplicate-in-contribution", f"duplicates {keep} of this contribution",
                                                 file=k, value=keep))
                judging.collides.setdefault(k, str(keep))


def _check_patient_labels(judging: _Judging) -> None:
    """One patient, one label: a contributed patient cannot sit in both classes."""
    labels_of_patient: dict[str, set[str]] = defaultdict(set)
    for r in judging.contribution.rows:
        if r.text("Patient ID").strip() and r.text("Label").strip() in LABEL_CLASS:
            labels_of_patient[patient_key(r.text("Patient ID"))].add(r.text("Label").strip())
    for src in judging.sources:
        row = judging.row(src)
        if row is not None and len(labels_of_patient.get(patient_key(row.text("Patient ID")), ())) > 1:
            judging.findings[src].append(error("patient.label-conflict", "this patient has both COVID and NonCOVID rows",
                                               file=judging.sheet, row=row.row, column="Patient ID", value=row.text("Patient ID")))


def _verdicts(judging: _Judging) -> dict[str, Decision]:
    """Each source accepted or not, with everything found about it."""
    decisions: dict[str, Decision] = {}
    for src in judging.sources:
        row = judging.row(src)
        label = row.text("Label").strip() if row else None
        decisions[src] = Decision(
            source=src,
            row=judging.row_of.get(src),
            accepted=not has_errors(judging.findings[src]),
            findings=tuple(judging.findings[src]),
            collides_with=judging.collides.get(src),
            label=label or None,
            class_dir=LABEL_CLASS.get(label or ""),
            doi=judging.doi_of.get(src),
            contributor_patient=(row.text("Patient ID").strip() or None) if row else None,
            sha256=judging.shas.get(src),
        )
    return decisions


def _place(decisions: dict[str, Decision], judging: _Judging, state: DatasetState, split_mode: str) -> dict[str, Decision]:
    """The accepted ones numbered (new dataset patients), named (free file names) and given a split."""
    accepted = [decisions[s] for s in judging.sources if decisions[s].accepted]
    patient_map: dict[str, str] = {}
    next_n = state.max_patient_number
    for d in sorted(accepted, key=lambda d: d.row or 0):
        key = patient_key(d.contributor_patient or "")
        if key not in patient_map:
            next_n += 1
            patient_map[key] = f"Patient {next_n}"
    taken = set(state.taken_names)
    items: list[Item] = []
    for d in accepted:
        base = d.source.rsplit("/", 1)[-1]
        if d.source in judging.proper_suffix:  # stored under the extension its content has
            base = base.rsplit(".", 1)[0] + judging.proper_suffix[d.source]
        new_name = _free_name(base, taken)
        taken.add(new_name.casefold())
        dataset_patient = patient_map[patient_key(d.contributor_patient or "")]
        decisions[d.source] = replace(d, new_name=new_name, dataset_patient=dataset_patient)
        fig = figure_key(new_name)
        items.append(Item(d.source, d.class_dir or "", dataset_patient, fig, state.figure_splits.get((d.class_dir or "", fig))))
    counts = {c: state.split_counts(c) for c in LABEL_CLASS.values()}
    for key, split in assign(items, split_mode, counts).items():
        decisions[key] = replace(decisions[key], split=split)
    return decisions


def _dataset_rel(path: Path, data_root: Path) -> str:
    try:
        return path.resolve().relative_to(data_root.resolve()).as_posix()
    except ValueError:
        return str(path)
