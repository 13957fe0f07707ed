"""Whether an interrupted `add-contribution` left the dataset half-applied.

Owns the names of the apply journal and staging folders (written by `contribution.apply`), so that
every command reading the dataset can say so instead of reporting a half-applied state as if it
were the dataset. Imports only `findings`.
"""

from __future__ import annotations

from pathlib import Path

from ctcurate.core.findings import Finding, error

TOOL_DIR = ".ctcurate"
JOURNAL = "apply-journal.json"
DATA_STAGING = "staging-"  # <data root>/.ctcurate/staging-<txn>/
META_STAGING = ".ctcurate-staging-"  # <metadata>/.ctcurate-staging-<txn>/


def journal_path(data_root: Path) -> Path:
    return data_root / TOOL_DIR / JOURNAL


def pending(data_root: Path | None, metadata_dir: Path | None) -> bool:
    """True when an interrupted run left a journal or staging behind in either folder given."""
    if data_root is not None:
        tool = data_root / TOOL_DIR
        if journal_path(data_root).exists() or any(tool.glob(DATA_STAGING + "*")):
            return True
    return metadata_dir is not None and any(metadata_dir.glob(META_STAGING + "*"))


def pending_findings(data_root: Path | None, metadata_dir: Path | None) -> list[Finding]:
    """One `dataset.pending-contribution` error when a contribution is half-applied, else none."""
    if not pending(data_root, metadata_dir):
        return []
    where = data_root if data_root is not None else metadata_dir
    return [error(
        "dataset.pending-contribution",
        "an interrupted add-contribution run is pending: what is checked here may be half-applied",
        file=str(where),
        hint="run `ctcurate add-contribution` on this dataset (not --dry-run): it completes or rolls back "
        "the interrupted run before anything else",
    )]
