"""One writer per dataset: an advisory lock file that the kernel releases when its holder dies.

Owns the lock protocol only. The file holds the holder's pid, host and start time so that a second
run can say who holds it; the lock itself is `flock` on the open file, so a SIGKILLed holder never
blocks anyone (its leftover file is reported as stale and taken over). Imports nothing from ctcurate.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class LockHeld(Exception):
    """Another live process holds the lock; `holder` says who, as far as its file tells."""

    def __init__(self, path: Path, holder: dict[str, object]) -> None:
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        super().__init__(f"{path}: another ctcurate run holds this dataset ({who}); wait for it to finish")
        self.path = path
        self.holder = holder


@dataclass(frozen=True)
class Lock:
    """A held lock. `stale` describes the dead holder whose leftover file was taken over, if any."""

    path: Path
    fd: int
    stale: dict[str, object] | None


def _read_holder(fd: int) -> dict[str, object]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"unparsed": raw[:200].decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(path: Path) -> Lock:
    """Take the lock at `path` without waiting; raise `LockHeld` when a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(path, holder) from None
        # The previous holder may have unlinked the file between our open and our flock: then we
        # hold a lock on a dead inode and must start over on the new file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_holder(fd)
    stale = None
    if previous:
        # flock succeeded, so nobody holds it: a leftover file means its holder died mid-run.
        stale = previous | {"alive": _pid_alive(previous.get("pid")) and previous.get("host") == socket.gethostname()}
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    os.fsync(fd)
    return Lock(path=path, fd=fd, stale=stale)


def release(lock: Lock) -> None:
    """Remove the file, then drop the lock (in that order, so no one locks a file about to vanish)."""
    try:
        lock.path.unlink(missing_ok=True)
    finally:
        os.close(lock.fd)


@contextmanager
def locked(paths: list[Path]) -> Iterator[list[Lock]]:
    """Hold every lock in `paths` (taken in sorted order; duplicates once) for the block."""
    held: list[Lock] = []
    try:
        for p in sorted({p.resolve() for p in paths}):
            held.append(acquire(p))
        yield held
    finally:
        for lock in reversed(held):
            release(lock)
