"""The embedded SQLite cache file shared by the commands (hashes, DOI answers, ...).

Owns where the file lives and how it is opened; each module creates its own tables in it.
"""

from __future__ import annotations

import os
import sqlite3
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
