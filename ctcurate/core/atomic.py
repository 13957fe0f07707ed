"""Atomic file writes: a reader sees the old file or the new one, never half of either; and the
rule that an output never silently replaces what the user has, nor an input (`refuse_*`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; give it the mode the target had, else what open() would give.
        os.chmod(tmp_path, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_write(target: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `target` when the block ends without error."""
    with atomic_path(target) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with open(tmp, mode, **kwargs) as fh:  # type: ignore[call-overload]
            yield fh


class WouldOverwrite(Exception):
    """Writing would replace what the user already has (refused unless forced) or an input (always)."""


def refuse_existing(target: Path, force: bool) -> None:
    """Refuse a target that exists and is not empty (a file with bytes, a folder with entries)."""
    if force or not target.exists():
        return
    if target.is_dir():
        non_empty = any(target.iterdir())
    else:
        non_empty = target.stat().st_size > 0
    if non_empty:
        kind = "folder" if target.is_dir() else "file"
        raise WouldOverwrite(f"{target}: the {kind} exists and is not empty; pass --force to write over it")


def refuse_inputs(targets: Iterable[Path], inputs: Iterable[Path], option: str) -> None:
    """Refuse to write any of `targets` onto one of `inputs` (same file after resolving links)."""
    read = {p.resolve() for p in inputs}
    for target in targets:
        if target.resolve() in read:
            raise WouldOverwrite(f"{target}: would overwrite the input; choose another {option} target")
