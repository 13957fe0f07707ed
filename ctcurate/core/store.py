"""The embedded SQLite cache file shared by the commands (hashes, DOI answers, ...).

Owns where the file lives and how it is opened; each module creates its own tables in it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE_DIR = ".ctcurate"
CACHE_FILE = "cache.sqlite"
CACHE_ENV = "CTCURATE_CACHE"


def default_cache_path(data_root: Path | None = None) -> Path:
    """`<data root>/.ctcurate/cache.sqlite`; else $CTCURATE_CACHE; else the user's cache folder."""
    if data_root is not None:
        return data_root / CACHE_DIR / CACHE_FILE
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ctcurate" / CACHE_FILE


def open_cache(path: Path) -> sqlite3.Connection:
    """Open (creating) the cache; WAL so readers and one writer can work at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_IN_BATCH = 500  # well under SQLite's limit on bound parameters


def select_in(conn: sqlite3.Connection, sql: str, keys: Sequence[object], *params: object) -> Iterator[tuple]:
    """Rows of `sql`, whose `IN ({marks})` is filled with `keys` in batches; `params` bind before them."""
    for start in range(0, len(keys), _IN_BATCH):
        part = list(keys[start : start + _IN_BATCH])
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), [*params, *part])
