"""Applying an intake plan all-or-nothing: stage, commit with a journal, switch in with renames.

Owns the write protocol. Every new or changed file is first written complete (and fsynced) into a
staging folder beside its target; then one atomic journal write is the commit point; then each
staged file is renamed over its target. A run killed before the journal exists leaves only staging
litter, which `recover` deletes (rolled back); a run killed after it is finished by `recover`
(every step is an idempotent rename). Also owns the sheet/split-list/provenance appends, which keep
every byte, sheet, style and cell type the files had. Callers hold `lock` around `apply_plan` and
`recover`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcurate.doi import normalize as doi_lib
from ctcurate.core import pending as pending_lib
from ctcurate.core.atomic import atomic_write
from ctcurate.contribution.dataset_state import PROVENANCE_FILE, DatasetState
from ctcurate.contribution.intake import IntakePlan
from ctcurate.core.layout import COVID_CLASS, COVID_SHEET, IMAGES_DIR, NONCOVID_SHEET, SPLITS_DIR, label_of_class
from ctcurate.contribution.xlsx_append import Cell, UnsupportedWorkbook, append_rows
from ctcurate.core.pending import DATA_STAGING, JOURNAL, META_STAGING, TOOL_DIR, journal_path  # noqa: F401

# Test hook: SIGKILL this process right after durable step k of apply or recover (1-based).
KILL_ENV = "CTCURATE_APPLY_KILL_AFTER"
SHEET_COLUMNS = ("File name", "Patient ID", "Age", "Gender", "Location", "Medical history", "Time",
                 "Severity", "Other diseases", "DOI", "Captions")


class ApplyError(Exception):
    """The dataset cannot be changed (I/O error, unsupported layout); nothing was switched in."""


@dataclass(frozen=True)
class ApplyResult:
    transaction: str
    images: int
    files_changed: tuple[str, ...]
    provenance: tuple[dict[str, object], ...]


@dataclass(frozen=True)
class Recovery:
    """What `recover` found and did: `completed` (rolled forward) or `rolled_back` staging, or nothing."""

    action: str  # "none", "completed", "rolled-back", "cleaned"
    transaction: str | None = None
    detail: str = ""


def lock_paths(data_root: Path, metadata_dir: Path) -> list[Path]:
    """The lock files guarding this dataset: one beside the images, one beside the metadata."""
    return [data_root / TOOL_DIR / "apply.lock", metadata_dir / ".ctcurate-apply.lock"]


def pending(data_root: Path, metadata_dir: Path) -> bool:
    """True when an interrupted run left a journal or staging behind (`recover` must run first)."""
    return pending_lib.pending(data_root, metadata_dir)


class _Steps:
    """Counts durable steps; the test hook turns step k into a SIGKILL."""

    def __init__(self) -> None:
        raw = os.environ.get(KILL_ENV, "")
        self.kill_at = int(raw) if raw.strip().isdigit() else 0
        self.n = 0

    def __call__(self) -> None:
        self.n += 1
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- building the new contents --------------------------------------------------------------


def _cell_value(column: str, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    if column == "DOI":
        return doi_lib.normalize(value)
    if column == "Age" and isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def covid_sheet_bytes(path: Path, rows: list[dict[str, object]]) -> bytes:
    """The workbook at `path` with `rows` appended to its first sheet; every other byte kept.

    New cells take the style of the last row that names a file (not of a footnote below it).
    """
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        it = wb.worksheets[0].iter_rows(values_only=False)
        header = {str(c.value).strip().casefold(): c.column for c in next(it, ()) if c.value is not None}
        name_col = header.get("file name", 1)
        last_data = None
        for row in it:
            for c in row:
                if getattr(c, "column", None) == name_col and c.value not in (None, ""):
                    last_data = c.row
    finally:
        wb.close()
    matrix = []
    for values in rows:
        cells: dict[int, Cell] = {}
        for column, value in values.items():
            col = header.get(column.casefold())
            if col is not None:
                cells[col] = _cell_value(column, value)  # type: ignore[assignment]
        matrix.append(cells)
    try:
        return append_rows(path.read_bytes(), matrix, style_row=last_data)
    except UnsupportedWorkbook as exc:
        raise ApplyError(f"{path}: cannot append rows to this workbook ({exc})") from exc


def _newline_of(data: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in data else b"\n"


def _with_final_newline(data: bytes, nl: bytes) -> bytes:
    return data if not data or data.endswith((b"\n", b"\r")) else data + nl


def noncovid_sheet_bytes(data: bytes, rows: list[tuple[str, str]]) -> bytes:
    """The CSV with `(image name, patient id)` rows appended, continuing its index column."""
    nl = _newline_of(data)
    text = data.decode("utf-8-sig")
    records = list(csv.reader(io.StringIO(text)))
    header = [h.strip().casefold() for h in records[0]] if records else ["", "image name", "patient id"]
    last_index = -1
    for rec in records[1:]:
        if rec and rec[0].strip().lstrip("-").isdigit():
            last_index = max(last_index, int(rec[0]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=nl.decode())
    if not records:
        writer.writerow(["", "image name", "patient id"])
    for name, patient in rows:
        last_index += 1
        rec = []
        for h in header:
            rec.append(name if h == "image name" else patient if h == "patient id" else str(last_index) if h == "" else "")
        writer.writerow(rec)
    prefix = data if records else b""
    return _with_final_newline(prefix, nl) + out.getvalue().encode("utf-8")


def split_list_bytes(data: bytes, names: list[str]) -> bytes:
    nl = _newline_of(data) if data else b"\n"
    return _with_final_newline(data, nl) + b"".join(n.encode("utf-8") + nl for n in names)


@dataclass(frozen=True)
class _Op:
    staged: Path
    target: Path


def _plan_files(plan: IntakePlan, state: DatasetState, contributor: str, source_name: str,
                txn: str, when: str) -> tuple[list[tuple[Path, str, str]], dict[Path, bytes], list[dict[str, object]]]:
    """New images (source, class, name), changed metadata files (target -> new bytes), provenance."""
    images: list[tuple[Path, str, str]] = []
    covid_rows: list[dict[str, object]] = []
    noncovid_rows: list[tuple[str, str]] = []
    splits: dict[tuple[str, str], list[str]] = defaultdict(list)
    provenance: list[dict[str, object]] = []
    for d in plan.accepted:
        assert d.new_name and d.class_dir and d.dataset_patient
        images.append((plan.images[d.source], d.class_dir, d.new_name))
        row = plan.rows[d.source]
        if d.class_dir == COVID_CLASS:
            values = {c: row.values.get(c) for c in SHEET_COLUMNS}
            values.update({"File name": d.new_name, "Patient ID": d.dataset_patient, "DOI": d.doi})
            covid_rows.append(values)
        else:
            noncovid_rows.append((d.new_name, d.dataset_patient))
        if d.split:
            splits[(d.class_dir, d.split)].append(d.new_name)
        provenance.append({
            "time": when, "contributor": contributor, "contribution": source_name, "transaction": txn,
            "source_doi": d.doi, "original_file_name": d.source, "new_file_name": d.new_name,
            "label": d.label, "sha256": d.sha256, "contributor_patient_id": d.contributor_patient,
            "dataset_patient_id": d.dataset_patient, "split": d.split,
        })
    meta = state.metadata_dir
    changed: dict[Path, bytes] = {}
    if covid_rows:
        path = meta / COVID_SHEET
        if not path.is_file():
            raise ApplyError(f"{path}: the COVID metadata sheet is missing; cannot append rows")
        changed[path] = covid_sheet_bytes(path, covid_rows)
    if noncovid_rows:
        path = meta / NONCOVID_SHEET
        changed[path] = noncovid_sheet_bytes(path.read_bytes() if path.is_file() else b"", noncovid_rows)
    for (class_dir, split), names in sorted(splits.items()):
        path = meta / SPLITS_DIR / label_of_class(class_dir) / f"{split}{class_dir}.txt"
        changed[path] = split_list_bytes(path.read_bytes() if path.is_file() else b"", names)
    if provenance:
        path = meta / PROVENANCE_FILE
        lines = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in provenance).encode()
        changed[path] = split_list_bytes(path.read_bytes() if path.is_file() else b"", []) + lines
    return images, changed, provenance


# --- the transaction ------------------------------------------------------------------------


def _rel(path: Path, data_root: Path, metadata_dir: Path) -> dict[str, str]:
    """A path as (root, relative path): the journal must survive the dataset being moved."""
    for tag, root in (("metadata", metadata_dir), ("data", data_root)):
        try:
            return {"root": tag, "path": path.relative_to(root).as_posix()}
        except ValueError:
            continue
    raise ApplyError(f"{path}: outside both the data root and the metadata folder")


class JournalError(ApplyError):
    """The journal is not one this ctcurate wrote: wrong shape, or a path leaving the dataset."""


@dataclass(frozen=True)
class _Journal:
    """A checked journal: every path absolute and inside its root, staged files inside staging."""

    transaction: str
    ops: tuple[_Op, ...]
    staging: tuple[Path, ...]


def _inside(entry: object, data_root: Path, metadata_dir: Path) -> Path:
    """The journal entry's path, resolved (its last part not followed), strictly inside its root."""
    if not (isinstance(entry, dict) and entry.get("root") in ("data", "metadata")
            and isinstance(entry.get("path"), str) and entry["path"]):
        raise JournalError(f"an entry is not {{'root': 'data'|'metadata', 'path': '...'}}: {entry!r}"[:300])
    root = (metadata_dir if entry["root"] == "metadata" else data_root).resolve()
    rel = Path(entry["path"])
    joined = root / rel
    resolved = joined.parent.resolve() / joined.name if joined.name not in ("", ".", "..") else joined.resolve()
    if rel.is_absolute() or ".." in rel.parts or root not in resolved.parents:
        raise JournalError(f"the path {entry['path']!r} leaves the {entry['root']} root {root}")
    return resolved


def _staging_dir(path: Path, data_root: Path, metadata_dir: Path) -> bool:
    """Only the folders `apply_plan` makes may be deleted as staging."""
    return (path.parent == (data_root / TOOL_DIR).resolve() and path.name.startswith(DATA_STAGING)) or (
        path.parent == metadata_dir.resolve() and path.name.startswith(META_STAGING))


def _parse_journal(body: object, data_root: Path, metadata_dir: Path) -> _Journal:
    """Check the whole journal before anything is touched; `JournalError` names the first problem."""
    if not isinstance(body, dict) or body.get("version") != 2:
        version = body.get("version") if isinstance(body, dict) else None
        raise JournalError(f"journal version {version!r} is not one this ctcurate knows")
    ops, staging = body.get("ops"), body.get("staging")
    if not isinstance(ops, list) or not isinstance(staging, list) or not isinstance(body.get("transaction"), str):
        raise JournalError("the journal lacks 'transaction', an 'ops' list or a 'staging' list")
    dirs = tuple(_inside(e, data_root, metadata_dir) for e in staging)
    for d in dirs:
        if not _staging_dir(d, data_root, metadata_dir):
            raise JournalError(f"{d} is not a staging folder of ctcurate; it will not be deleted")
    checked = []
    for op in ops:
        if not isinstance(op, dict):
            raise JournalError(f"an op is not {{'staged': ..., 'target': ...}}: {op!r}"[:300])
        staged = _inside(op.get("staged"), data_root, metadata_dir)
        target = _inside(op.get("target"), data_root, metadata_dir)
        if not any(d in staged.parents for d in dirs) or staged.is_symlink():
            raise JournalError(f"the staged file {staged} is not inside the journal's staging folders")
        if any(d == target or d in target.parents for d in dirs) or TOOL_DIR in target.relative_to(
                (metadata_dir if op["target"]["root"] == "metadata" else data_root).resolve()).parts[:1]:
            raise JournalError(f"the target {target} is not a dataset file")
        checked.append(_Op(staged, target))
    return _Journal(body["transaction"], tuple(checked), dirs)


def _journal_body(txn: str, ops: list[_Op], staging: list[Path], data_root: Path, metadata_dir: Path) -> dict[str, Any]:
    # Entries under the metadata folder are tagged "metadata" first, so nesting either way resolves.
    return {"transaction": txn, "version": 2,
            "ops": [{"staged": _rel(o.staged, data_root, metadata_dir), "target": _rel(o.target, data_root, metadata_dir)}
                    for o in ops],
            "staging": [_rel(p, data_root, metadata_dir) for p in staging]}


def _write_journal(data_root: Path, body: dict[str, Any]) -> None:
    with atomic_write(journal_path(data_root)) as fh:
        json.dump(body, fh, indent=1)
    _fsync_dir(journal_path(data_root).parent)


def _roll_forward(journal: _Journal, data_root: Path, step: Callable[[], None] = lambda: None) -> None:
    """Rename every staged file still present over its target; idempotent, so it resumes anywhere.

    A step whose staged file and target are both gone cannot be redone: that is refused (the
    journal stays) rather than declared done.
    """
    touched: set[Path] = set()
    for op in journal.ops:
        staged, target = op.staged, op.target
        if staged.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            touched.add(target.parent)
            step()
        elif not target.exists():
            raise ApplyError(f"{journal_path(data_root)}: cannot complete the interrupted contribution: neither "
                             f"{staged} nor {target} exists (was the dataset moved or edited?)")
    for d in touched:
        _fsync_dir(d)


def apply_plan(plan: IntakePlan, state: DatasetState, *, contributor: str, source_name: str) -> ApplyResult:
    """Switch the accepted part of `plan` into the dataset, all or nothing. Hold the lock around it."""
    step = _Steps()
    data_root, meta = state.data_root, state.metadata_dir
    txn = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    images, changed, provenance = _plan_files(plan, state, contributor, source_name, txn, when)
    data_stage = data_root / TOOL_DIR / f"{DATA_STAGING}{txn}"
    meta_stage = meta / f"{META_STAGING}{txn}"
    ops: list[_Op] = []
    try:
        data_stage.mkdir(parents=True)
        meta_stage.mkdir(parents=True)
        # The metadata staging says where its journal would be, for a recovery started elsewhere.
        (meta_stage / "owner.json").write_text(json.dumps({"journal": str(journal_path(data_root))}))
        step()
        for src, class_dir, name in images:
            staged = data_stage / class_dir / name
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staged)
            _fsync_file(staged)
            ops.append(_Op(staged, data_root / IMAGES_DIR / class_dir / name))
            step()
        for i, (target, content) in enumerate(changed.items()):
            staged = meta_stage / f"{i:03d}-{target.name}"
            with open(staged, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            ops.append(_Op(staged, target))
            step()
        _fsync_dir(data_stage)
        _fsync_dir(meta_stage)
        for op in ops:
            op.target.parent.mkdir(parents=True, exist_ok=True)
            if os.stat(op.staged.parent).st_dev != os.stat(op.target.parent).st_dev:
                raise ApplyError(f"{op.target.parent}: on another file system than {op.staged.parent}; "
                                 "cannot switch files in atomically")
    except (OSError, ApplyError) as exc:
        shutil.rmtree(data_stage, ignore_errors=True)
        shutil.rmtree(meta_stage, ignore_errors=True)
        if isinstance(exc, ApplyError):
            raise
        raise ApplyError(f"cannot stage the new files: {exc}") from exc
    # Commit point: from here on, the change happens (now or at the next start).
    body = _journal_body(txn, ops, [data_stage, meta_stage], data_root, meta)
    journal = _parse_journal(body, data_root, meta)  # the same checks a recovery makes
    _write_journal(data_root, body)
    step()
    _roll_forward(journal, data_root, step)
    _finish(data_root, [data_stage, meta_stage], step)
    return ApplyResult(
        transaction=txn,
        images=len(images),
        files_changed=tuple(sorted(str(p) for p in changed)),
        provenance=tuple(provenance),
    )


def _finish(data_root: Path, staging: list[Path], step: Callable[[], None] = lambda: None) -> None:
    journal_path(data_root).unlink(missing_ok=True)
    _fsync_dir(journal_path(data_root).parent)
    step()
    for d in staging:
        shutil.rmtree(d, ignore_errors=True)
    step()


def recover(data_root: Path, metadata_dir: Path) -> Recovery:
    """Finish a committed run or delete an uncommitted one's staging. Hold the lock around it."""
    jpath = journal_path(data_root)
    if jpath.exists():
        try:
            journal = json.loads(jpath.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ApplyError(f"{jpath}: unreadable journal ({exc}); move it away only after checking the dataset") from exc
        step = _Steps()  # recovery can be killed too; it resumes the same way
        try:
            checked = _parse_journal(journal, data_root, metadata_dir)
        except JournalError as exc:
            raise JournalError(f"{jpath}: {exc}; nothing was changed: move it away only after checking "
                               "the dataset") from exc
        _roll_forward(checked, data_root, step)
        _finish(data_root, list(checked.staging), step)
        return Recovery("completed", checked.transaction, "an interrupted contribution was completed")
    removed: list[Path] = []
    staged_files = 0
    for d in sorted((data_root / TOOL_DIR).glob(DATA_STAGING + "*")):
        staged_files += sum(1 for p in d.rglob("*") if p.is_file())
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    for d in sorted(metadata_dir.glob(META_STAGING + "*")):
        owner = d / "owner.json"
        try:
            other = Path(json.loads(owner.read_text())["journal"]) if owner.exists() else None
        except (OSError, ValueError, KeyError, TypeError):
            other = None
        if other is not None and other != jpath and other.exists():
            continue  # committed by a run on another data root: its own recovery finishes it
        staged_files += sum(1 for p in d.rglob("*") if p.is_file() and p.name != "owner.json")
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    if not removed:
        return Recovery("none")
    txn = re.sub(r"^.*staging-", "", removed[0].name)
    if staged_files:
        return Recovery("rolled-back", txn, "an interrupted contribution was rolled back (nothing had been switched in)")
    return Recovery("cleaned", txn, "leftover staging folders of a finished contribution were removed")
