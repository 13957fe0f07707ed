"""The embedded SQLite cache file shared by the commands (hashes, DOI answers, ...).

Owns where the file lives (the one rule: `--cache`, else $CTCURATE_CACHE, else the user's cache
folder) and how it is opened (a damaged file is moved aside and rebuilt: it is only a cache); each
module creates its own tables in it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import platformdirs

CACHE_FILE = "cache.sqlite"
CACHE_ENV = "CTCURATE_CACHE"
APP_NAME = "ctcurate"


def cache_location(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The one cache file every command uses: `--cache`, else $CTCURATE_CACHE, else the user's cache folder.

    The default is per user (`platformdirs.user_cache_dir`, e.g. ~/.cache/ctcurate/cache.sqlite),
    not inside the dataset: a dataset is often shared or read-only, and entries are keyed by file
    content, so one cache serves every copy of a dataset.
    """
    given = explicit or os.environ.get(CACHE_ENV)
    if given:
        try:
            return Path(given).expanduser()
        except RuntimeError:  # `~name/...` where no user is called name
            raise OSError(errno.ENOENT, "no home folder for the user the ~ names", os.fspath(given)) from None
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / CACHE_FILE


def cache_folder(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the cache file; bulky caches (the benchmark's decoded tensors) live beside it."""
    return cache_location(explicit).parent


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if conn.execute("PRAGMA quick_check(1)").fetchone() != ("ok",):
            raise sqlite3.DatabaseError("database disk image is malformed")
    except BaseException:
        conn.close()
        raise
    return conn


def _is_damage(exc: sqlite3.Error) -> bool:
    """Not a database, or a malformed one; a locked or unopenable file is not damage (it stays an error)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def move_aside(path: Path) -> Path:
    """Rename a damaged cache file (and its WAL and shared-memory files) to `<name>.damaged-<n>`."""
    n = 1
    while path.with_name(f"{path.name}.damaged-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, aside.with_name(aside.name + suffix))
    return aside


def open_cache(path: Path, on_damage: Callable[[str], None] | None = None) -> sqlite3.Connection:
    """Open (creating) the cache; WAL so readers and one writer can work at once.

    A cache is only a cache: a damaged file (not SQLite, or failing SQLite's quick check) is moved
    aside and a new one started; `on_damage` hears one line saying so.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # `--cache /dev/null/c.sqlite`: mkdir says only "File exists"
        raise NotADirectoryError(errno.ENOTDIR, "a file is where the cache's folder should be", exc.filename) from None
    try:
        return _connect(path)
    except sqlite3.Error as exc:
        if not _is_damage(exc) or not path.is_file():
            raise
        aside = move_aside(path)
        if on_damage is not None:
            on_damage(f"{path}: damaged cache file ({exc}) moved to {aside.name}; starting a new one")
    return _connect(path)


_IN_BATCH = 500  # well under SQLite's limit on bound parameters


def select_in(conn: sqlite3.Connection, sql: str, keys: Sequence[object], *params: object) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql`, whose `IN ({marks})` is filled with `keys` in batches; `params` bind before them."""
    for start in range(0, len(keys), _IN_BATCH):
        part = list(keys[start : start + _IN_BATCH])
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), [*params, *part])
