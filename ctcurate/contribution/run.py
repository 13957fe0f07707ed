"""The add-contribution use case: lock, recover, judge, apply; and its report as text or JSON.

Owns the order of those steps and the outcome record the CLI prints; the rules live in `intake`,
the writing in `apply`, the lock in `lock`. Never prints or exits.
"""

from __future__ import annotations

from collections import Counter
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ctcurate.contribution import apply as apply_lib
from ctcurate.contribution.source import Contribution, open_contribution
from ctcurate.contribution.dataset_state import DatasetState, read_state
from ctcurate.core.findings import Finding, Severity, dump_json, one_line
from ctcurate.contribution.intake import DuplicateFinder, Duplicates, IntakePlan, RowChecker, plan_intake
from ctcurate.core.lock import LockHeld, locked
from ctcurate.core.unionfind import components
from ctcurate.core.sheets import SheetError
from ctcurate.core.store import cache_location

if TYPE_CHECKING:  # requests is imported only when checking online
    from ctcurate.doi.resolve import Resolver


class ContributionIOError(Exception):
    """The dataset could not be read, locked or written: the run stops, nothing half-done."""


@dataclass(frozen=True)
class Outcome:
    plan: IntakePlan
    dry_run: bool
    applied: apply_lib.ApplyResult | None = None
    notes: tuple[str, ...] = field(default=())  # recovery, stale locks: said once, before the report

    @property
    def exit_code(self) -> int:
        return 0 if self.plan.all_accepted and (self.dry_run or self.applied is not None) else 1


def add_contribution(
    source: Path,
    data_root: Path,
    metadata_dir: Path,
    *,
    check_rows: RowChecker,
    find_duplicates: DuplicateFinder,
    split_mode: str = "auto",
    contributor: str = "",
    dry_run: bool = False,
    partial: bool = False,
) -> Outcome:
    """Judge `source` against the dataset; unless `dry_run`, apply it (all, or the accepted part if `partial`).

    Raises `ContributionIOError` for I/O trouble and `LockHeld` when another run holds the dataset.
    """
    if dry_run:
        if apply_lib.pending(data_root, metadata_dir):
            raise ContributionIOError(
                f"{data_root}: an interrupted contribution is pending; run add-contribution without "
                "--dry-run to complete or roll it back first")
        try:
            with open_contribution(source) as contribution:
                plan = _plan(contribution, data_root, metadata_dir, check_rows, find_duplicates, split_mode)
        except OSError as exc:
            raise ContributionIOError(f"{getattr(exc, 'filename', None) or source}: {exc.strerror or exc}") from exc
        return Outcome(plan, dry_run=True)
    notes: list[str] = []
    try:
        with locked(apply_lib.lock_paths(data_root, metadata_dir)) as locks:
            for lock in locks:
                if lock.stale:
                    state = " (still running, but not holding it)" if lock.stale.get("alive") else " (no longer running)"
                    notes.append(f"cleared a stale lock {lock.path} left by pid {lock.stale.get('pid', '?')}{state}")
            recovery = apply_lib.recover(data_root, metadata_dir)
            if recovery.action != "none":
                notes.append(f"{recovery.detail} (transaction {recovery.transaction})")
            # The images are copied from the (possibly unpacked) contribution: apply inside the block.
            with open_contribution(source) as contribution:
                plan = _plan(contribution, data_root, metadata_dir, check_rows, find_duplicates, split_mode)
                applied = None
                if plan.accepted and (plan.all_accepted or partial):
                    applied = apply_lib.apply_plan(plan, _read_state(data_root, metadata_dir),
                                                   contributor=contributor, source_name=source.name)
            return Outcome(plan, dry_run=False, applied=applied, notes=tuple(notes))
    except LockHeld:
        raise
    except apply_lib.ApplyError as exc:
        raise ContributionIOError(str(exc)) from exc
    except OSError as exc:
        raise ContributionIOError(f"{getattr(exc, 'filename', None) or data_root}: {exc.strerror or exc}") from exc


def _read_state(data_root: Path, metadata_dir: Path) -> DatasetState:
    try:
        return read_state(data_root, metadata_dir)
    except SheetError as exc:  # a broken sheet or split list in the dataset itself
        raise ContributionIOError(f"{metadata_dir}: cannot read the dataset's metadata: {exc}") from exc


def _plan(contribution: Contribution, data_root: Path, metadata_dir: Path, check_rows: RowChecker,
          find_duplicates: DuplicateFinder, split_mode: str) -> IntakePlan:
    state = _read_state(data_root, metadata_dir)
    return plan_intake(contribution, state, check_rows=check_rows, find_duplicates=find_duplicates,
                       split_mode=split_mode)


# --- report ---------------------------------------------------------------------------------


def _status(outcome: Outcome) -> str:
    if outcome.dry_run:
        return "dry run: nothing written"
    if outcome.applied is not None:
        return f"applied {outcome.applied.images} image(s) (transaction {outcome.applied.transaction})"
    if outcome.plan.accepted:
        why = "some files were rejected" if outcome.plan.rejected else "the contribution has errors"
        return f"nothing applied: {why} (use --partial to apply the accepted ones)"
    return "nothing applied"


def planned_writes(plan: IntakePlan) -> dict[str, int]:
    """Dataset file (relative) -> how many images or lines the accepted part adds to it."""
    from ctcurate.contribution.dataset_state import PROVENANCE_FILE
    from ctcurate.core.layout import COVID_CLASS, COVID_SHEET, IMAGES_DIR, NONCOVID_SHEET, SPLITS_DIR, label_of_class

    out: Counter[str] = Counter()
    for d in plan.accepted:
        out[f"{IMAGES_DIR}/{d.class_dir}/"] += 1
        out[COVID_SHEET if d.class_dir == COVID_CLASS else NONCOVID_SHEET] += 1
        if d.split and d.class_dir:
            out[f"{SPLITS_DIR}/{label_of_class(d.class_dir)}/{d.split}{d.class_dir}.txt"] += 1
        out[PROVENANCE_FILE] += 1
    return dict(sorted(out.items()))


def render_text(outcome: Outcome) -> str:
    plan = outcome.plan
    lines = list(outcome.notes)
    for f in plan.findings:
        lines.append(f"{f.severity.value}: {f.location()}: {f.code}: {f.message}"
                     + (f" [{f.value!r}]" if f.value is not None else ""))
    for d in plan.decisions:
        if d.accepted:
            split = d.split or "no split"
            lines.append(f"accepted  {d.source} -> {d.class_dir}/{d.new_name} ({d.dataset_patient}, {split})")
        else:
            reasons = ", ".join(d.reasons)
            coll = f" collides with {d.collides_with}" if d.collides_with else ""
            lines.append(f"rejected  {d.source}: {reasons}{coll}")
        for f in d.findings:
            row = f" row {f.row}" if f.row is not None else ""
            value = f" [{f.value!r}]" if f.value is not None else ""
            lines.append(f"    {f.severity.value}: {f.code}{row}: {f.message}{value}")
            if f.hint:
                lines.append(f"        hint: {f.hint}")
    if plan.patient_map:
        lines.append("patients: " + ", ".join(f"{k!r} -> {v}" for k, v in plan.patient_map.items()))
    splits = Counter((d.class_dir, d.split or "none") for d in plan.accepted)
    if splits:
        lines.append("splits: " + ", ".join(f"{c} {s}: {n}" for (c, s), n in sorted(splits.items())))
    writes = planned_writes(plan)
    if writes and (outcome.dry_run or outcome.applied is not None):
        verb = "would write" if outcome.dry_run else "wrote"
        lines.append(f"{verb}: " + ", ".join(f"{name} (+{n})" for name, n in writes.items()))
    lines.append(f"{len(plan.accepted)} accepted, {len(plan.rejected)} rejected; {_status(outcome)}")
    return "\n".join(one_line(x) for x in lines)  # a file name must not break or reorder a line


def _finding_json(f: Finding) -> dict[str, object]:
    return f.model_dump(mode="json")


def render_json(outcome: Outcome) -> str:
    plan = outcome.plan
    body = {
        "dry_run": outcome.dry_run,
        "applied": outcome.applied is not None,
        "transaction": outcome.applied.transaction if outcome.applied else None,
        "notes": list(outcome.notes),
        "findings": [_finding_json(f) for f in plan.findings],
        "files": [
            {
                "source": d.source, "row": d.row, "status": "accepted" if d.accepted else "rejected",
                "reasons": list(d.reasons), "collides_with": d.collides_with, "label": d.label,
                "class_dir": d.class_dir, "doi": d.doi, "contributor_patient_id": d.contributor_patient,
                "dataset_patient_id": d.dataset_patient, "new_file_name": d.new_name, "split": d.split,
                "sha256": d.sha256, "findings": [_finding_json(f) for f in d.findings],
            }
            for d in plan.decisions
        ],
        "patients": plan.patient_map,
        "writes": planned_writes(plan) if (outcome.dry_run or outcome.applied is not None) else {},
        "summary": {
            "accepted": len(plan.accepted), "rejected": len(plan.rejected),
            "errors": sum(f.severity is Severity.ERROR for d in plan.decisions for f in d.findings)
            + sum(f.severity is Severity.ERROR for f in plan.findings),
            "status": _status(outcome),
        },
    }
    return dump_json(body)


@contextmanager
def hash_cache(explicit: Path | None, scratch: bool) -> Iterator[Path]:
    """The cache file (`store.cache_location`'s rule), or with `scratch` a throw-away copy of it."""
    path = cache_location(explicit)
    if not scratch:
        yield path
        return
    with scratch_cache(path) as copy:
        yield copy


@contextmanager
def scratch_cache(cache_path: Path) -> Iterator[Path]:
    """A throw-away copy of the hash cache (with its WAL), so that a dry run reads it warm but
    leaves the real one, and the dataset folder, exactly as they were."""
    with tempfile.TemporaryDirectory(prefix="ctcurate-dry-run-") as tmp:
        target = Path(tmp) / cache_path.name
        for suffix in ("", "-wal"):
            src = cache_path.with_name(cache_path.name + suffix)
            if src.is_file():
                shutil.copyfile(src, target.with_name(target.name + suffix))
        yield target


# --- the default seams ----------------------------------------------------------------------


def default_row_checker(resolver: Resolver | None = None, data_root: Path | None = None,
                        metadata_dir: Path | None = None) -> RowChecker:
    """The contribution model's checks (Label, required cells) plus `validate`'s row checks; with a
    `resolver` (--online), also the registries' word on each DOI against the dataset's papers."""
    from ctcurate.contribution.intake import combine_checkers, metainfo_row_checker, model_row_checker

    checker = combine_checkers(model_row_checker, metainfo_row_checker)
    if resolver is None or data_root is None or metadata_dir is None:
        return checker
    from ctcurate.doi.resolve import online_row_checker

    return combine_checkers(checker, online_row_checker(resolver, read_state(data_root, metadata_dir).dois))


def default_duplicate_finder(cache_path: Path | None = None, scheduler: str | None = None) -> DuplicateFinder:
    """check-leakage's search (perceptual hashes + pixel verification, cached): resized, re-compressed
    or re-cropped copies count, not only byte-identical ones. `scheduler`: a Dask scheduler to run it on."""

    def find(new_images: Sequence[Path], data_root: Path) -> Duplicates:
        from ctcurate.core.layout import IMAGES_DIR
        from ctcurate.leakage.pipeline import find_duplicates_of

        check = find_duplicates_of(new_images, data_root, cache_path, scheduler=scheduler)
        of_existing = {
            Path(p): tuple(data_root / IMAGES_DIR / m.dataset_path for m in sorted(ms, key=lambda m: -m.score))
            for p, ms in check.matches.items() if ms
        }
        cache_notes = tuple(f for f in check.findings if f.code == "cache.damaged")
        return Duplicates(of_existing, _groups([(Path(pair.a), Path(pair.b)) for pair in check.within]), cache_notes)

    return find


def _groups(pairs: list[tuple[Path, Path]]) -> tuple[tuple[Path, ...], ...]:
    """Connected components of the duplicate pairs: each is one picture sent several times."""
    nodes = dict.fromkeys(p for pair in pairs for p in pair)
    return tuple(tuple(sorted(c)) for c in components(nodes, pairs) if len(c) > 1)
