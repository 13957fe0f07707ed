"""The embedded SQLite cache file shared by the commands (hashes, DOI answers, ...).

Owns where the file lives (the one rule: `--cache`, else $CTCURATE_CACHE, else the user's cache
folder) and how it is opened; each module creates its own tables in it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
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
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / CACHE_FILE


def cache_folder(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the cache file; bulky caches (the benchmark's decoded tensors) live beside it."""
    return cache_location(explicit).parent


def open_cache(path: Path) -> sqlite3.Connection:
    """Open (creating) the cache; WAL so readers and one writer can work at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_IN_BATCH = 500  # well under SQLite's limit on bound parameters


def select_in(conn: sqlite3.Connection, sql: str, keys: Sequence[object], *params: object) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql`, whose `IN ({marks})` is filled with `keys` in batches; `params` bind before them."""
    for start in range(0, len(keys), _IN_BATCH):
        part = list(keys[start : start + _IN_BATCH])
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), [*params, *part])
