"""Fingerprints and pair verdicts, cached in the shared SQLite file so a second run re-hashes nothing.

Owns the leakage tables in `store.open_cache`'s file: fingerprints and keypoints keyed by the
file's content sha256 and `hashing.HASH_VERSION` (a renamed file is not re-hashed, a changed one
is), and verdicts keyed by the two content hashes and `VERIFY_VERSION`. Also owns hashing a list of files in
parallel processes. Imports `hashing`, `keypoints`, `images`, `store`; never prints (progress is a callback).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.store import open_cache, select_in
from ctcurate.leakage.hashing import (
    HASH_VERSION,
    Fingerprint,
    describe_image,
    file_sha256,
)
from ctcurate.leakage.keypoints import Keypoints

VERIFY_VERSION = "6"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leakage_fingerprint (
    sha256 TEXT NOT NULL, version TEXT NOT NULL, meta TEXT NOT NULL, thumb BLOB NOT NULL,
    PRIMARY KEY (sha256, version));
CREATE TABLE IF NOT EXISTS leakage_keypoints (
    sha256 TEXT NOT NULL, version TEXT NOT NULL, meta TEXT NOT NULL,
    xy BLOB NOT NULL, desc BLOB NOT NULL, xy_m BLOB NOT NULL, desc_m BLOB NOT NULL,
    PRIMARY KEY (sha256, version));
CREATE TABLE IF NOT EXISTS leakage_verdict (
    pair TEXT NOT NULL PRIMARY KEY, verdict TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leakage_stat (
    path TEXT NOT NULL PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""
HASH_FIELDS = ("phash", "phash_m")

Progress = Callable[[int, int], None]


def _warm_up() -> None:
    """Worker start: import what every hashing worker needs (scipy's DCT) before the first task."""
    from scipy import fftpack  # noqa: F401


class Workers:
    """A process pool started on first use and shared by hashing and verification.

    One pool per run: its workers keep what they imported (scipy, imagehash) from one stage to the
    next, and a run that finds everything cached starts no process at all. Use as a context manager.
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, initializer=_warm_up)
        return self._pool

    def start(self) -> None:
        """Start the workers now, so that their imports overlap the caller's serial work."""
        if self.jobs > 1:
            self.get()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


@dataclass(frozen=True)
class HashOutcome:
    """One file's fingerprint, or why it could not be made (`error`), and its content hash."""

    path: Path
    sha256: str
    fingerprint: Fingerprint | None
    error: str | None = None
    cached: bool = False
    keypoints: Keypoints | None = None


def _to_row(fp: Fingerprint) -> tuple[str, bytes]:
    meta = {
        "width": fp.width,
        "height": fp.height,
        "box": list(fp.box),
        **{k: format(getattr(fp, k), "016x") for k in HASH_FIELDS},
        "sub_phash": [format(h, "016x") for h in fp.sub_phash],
    }
    return json.dumps(meta), fp.thumb


def _from_row(meta_text: str, thumb: bytes) -> Fingerprint:
    meta = json.loads(meta_text)
    return Fingerprint(
        width=meta["width"],
        height=meta["height"],
        box=tuple(meta["box"]),
        thumb=bytes(thumb),
        **{k: int(meta[k], 16) for k in HASH_FIELDS},
        sub_phash=tuple(int(h, 16) for h in meta.get("sub_phash", ())),
    )


class HashCache:
    """The leakage tables of one cache file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection = open_cache(path)
        self.conn.executescript(_SCHEMA)

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()

    def get_many(self, shas: Sequence[str]) -> dict[str, Fingerprint]:
        out: dict[str, Fingerprint] = {}
        sql = "SELECT sha256, meta, thumb FROM leakage_fingerprint WHERE version = ? AND sha256 IN ({marks})"
        for sha, meta, thumb in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION):
            out[sha] = _from_row(meta, thumb)
        return out

    def put_many(self, items: Sequence[tuple[str, Fingerprint]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO leakage_fingerprint (sha256, version, meta, thumb) VALUES (?, ?, ?, ?)",
            [(sha, HASH_VERSION, *_to_row(fp)) for sha, fp in items],
        )
        self.conn.commit()

    def get_keypoints(self, shas: Sequence[str]) -> dict[str, Keypoints]:
        out: dict[str, Keypoints] = {}
        sql = "SELECT sha256, meta, xy, desc, xy_m, desc_m FROM leakage_keypoints WHERE version = ? AND sha256 IN ({marks})"
        for sha, meta, xy, desc, xy_m, desc_m in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION):
            m = json.loads(meta)
            out[sha] = Keypoints(m["width"], m["height"], m["scale"], bytes(xy), bytes(desc), bytes(xy_m), bytes(desc_m))
        return out

    def put_keypoints(self, items: Sequence[tuple[str, Keypoints]]) -> None:
        rows = [
            (sha, HASH_VERSION, json.dumps({"width": k.width, "height": k.height, "scale": k.scale}), k.xy, k.desc, k.xy_m, k.desc_m)
            for sha, k in items
        ]
        self.conn.executemany("INSERT OR REPLACE INTO leakage_keypoints VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.commit()

    def known_shas(self, paths: Sequence[Path]) -> dict[Path, str]:
        """Content hashes remembered for files whose size and mtime are unchanged (like git's index)."""
        out: dict[Path, str] = {}
        by_name = {str(p.resolve()): p for p in paths}
        sql = "SELECT path, size, mtime_ns, sha256 FROM leakage_stat WHERE path IN ({marks})"
        for name, size, mtime, sha in select_in(self.conn, sql, sorted(by_name)):
            try:
                st = os.stat(name)
            except OSError:
                continue
            if st.st_size == size and st.st_mtime_ns == mtime:
                out[by_name[name]] = sha
        return out

    def remember_shas(self, items: Sequence[tuple[Path, int, int, str]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO leakage_stat (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
            [(str(p.resolve()), size, mtime, sha) for p, size, mtime, sha in items],
        )
        self.conn.commit()

    @staticmethod
    def pair_key(sha_a: str, sha_b: str) -> str:
        lo, hi = sorted((sha_a, sha_b))
        return f"{lo}:{hi}:{HASH_VERSION}:{VERIFY_VERSION}"

    def get_verdicts(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        sql = "SELECT pair, verdict FROM leakage_verdict WHERE pair IN ({marks})"
        for key, text in select_in(self.conn, sql, sorted(set(keys))):
            out[key] = json.loads(text)
        return out

    def put_verdicts(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO leakage_verdict (pair, verdict) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in items],
        )
        self.conn.commit()


Described = tuple[Fingerprint, Keypoints]


def _hash_one(path: Path) -> tuple[Described | None, str | None]:
    """All per-image work of a run (one decode): fingerprint and keypoints, or why not."""
    try:
        return describe_image(open_image(path)), None
    except UnreadableImage as exc:
        return None, exc.reason
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _content_hashes(
    paths: Sequence[Path], cache: HashCache | None, workers: Workers | None
) -> tuple[list[str | None], dict[int, str]]:
    """The sha256 of every file (remembered ones by size and mtime), and why a file could not be read."""
    shas: list[str | None] = []
    errors: dict[int, str] = {}
    remembered = cache.known_shas(paths) if cache else {}
    if workers is not None and len(paths) - len(remembered) >= 16:
        workers.start()  # likely work to do: workers import while the content hashes are read here
    new_stats: list[tuple[Path, int, int, str]] = []
    for k, p in enumerate(paths):
        if p in remembered:
            shas.append(remembered[p])
            continue
        try:
            st = os.stat(p)
            sha = file_sha256(p)
        except OSError as exc:
            shas.append(None)
            errors[k] = f"cannot read: {exc.strerror or exc}"
            continue
        shas.append(sha)
        new_stats.append((p, st.st_size, st.st_mtime_ns, sha))
    if cache and new_stats:
        cache.remember_shas(new_stats)
    return shas, errors


def _cached(cache: HashCache | None, shas: Sequence[str | None]) -> dict[str, Described]:
    """What the cache holds complete (fingerprint and keypoints) for these content hashes."""
    if cache is None:
        return {}
    wanted = [s for s in shas if s]
    fps, kps = cache.get_many(wanted), cache.get_keypoints(wanted)
    return {s: (fps[s], kps[s]) for s in fps if s in kps}


def _describe(
    paths: Sequence[Path], jobs: int, workers: Workers | None, on_done: Callable[[], None]
) -> list[tuple[Described | None, str | None]]:
    """`_hash_one` of every path, in the shared pool when there is enough work."""
    if jobs <= 1 or len(paths) < 16:
        results: Iterator[tuple[Described | None, str | None]] = map(_hash_one, paths)
        pool: ProcessPoolExecutor | None = None
    else:
        pool = None if workers is not None else ProcessPoolExecutor(max_workers=jobs)
        executor = workers.get() if workers is not None else pool
        assert executor is not None
        results = executor.map(_hash_one, paths, chunksize=max(1, min(8, len(paths) // (jobs * 4))))
    out = []
    try:
        for r in results:
            out.append(r)
            on_done()
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def hash_files(
    paths: Sequence[Path],
    cache: HashCache | None,
    jobs: int | None = None,
    progress: Progress | None = None,
    workers: Workers | None = None,
) -> list[HashOutcome]:
    """Fingerprint every file, taking what the cache holds and hashing the rest in `jobs` processes.

    Order follows `paths`. An unreadable file is an outcome with `error`, never an exception.
    `workers` lends a shared pool (its size replaces `jobs`); without it a pool lives for this call.
    """
    shas, errors = _content_hashes(paths, cache, workers)
    known = _cached(cache, shas)
    first_of: dict[str, int] = {}  # identical files are described once
    for k, sha in enumerate(shas):
        if sha is not None and sha not in known and sha not in first_of:
            first_of[sha] = k
    done = [len(paths) - len(first_of)]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], len(paths))

    if progress:
        progress(done[0], len(paths))
    jobs = workers.jobs if workers is not None else jobs or default_jobs()
    fresh: dict[str, Described] = {}
    for (sha, k), (described, err) in zip(first_of.items(), _describe([paths[k] for k in first_of.values()], jobs, workers, tick)):
        if described is None:
            errors[k] = err or "cannot decode"
        else:
            fresh[sha] = described
    if cache and fresh:
        cache.put_many([(sha, d[0]) for sha, d in fresh.items()])
        cache.put_keypoints([(sha, d[1]) for sha, d in fresh.items()])
    return [_outcome(p, shas[k], errors.get(k), known, fresh, errors.get(first_of.get(shas[k] or "", -1))) for k, p in enumerate(paths)]


def _outcome(
    path: Path, sha: str | None, error: str | None, known: dict[str, Described], fresh: dict[str, Described], first_error: str | None
) -> HashOutcome:
    if error is not None or sha is None:
        return HashOutcome(path, sha or "", None, error or "cannot read")
    if sha in known:
        return HashOutcome(path, sha, known[sha][0], cached=True, keypoints=known[sha][1])
    if sha in fresh:
        return HashOutcome(path, sha, fresh[sha][0], keypoints=fresh[sha][1])
    return HashOutcome(path, sha, None, first_error or "cannot decode")  # a copy of a file that failed to decode
