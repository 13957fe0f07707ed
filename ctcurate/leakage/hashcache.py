"""Fingerprints and pair verdicts, cached in the shared SQLite file so a second run re-hashes nothing.

Owns the leakage tables in `store.open_cache`'s file: fingerprints and keypoints keyed by the
file's content sha256 and `hashing.HASH_VERSION` (a renamed file is not re-hashed, a changed one
is), and verdicts keyed by the two content hashes and `VERIFY_VERSION`. Also owns describing a list
of files on an `execution.Executor` (local processes or a Dask cluster); only this process writes
the cache, in batches. Imports `execution`, `hashing`, `keypoints`, `images`, `store`; never prints
(progress is a callback).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcurate.leakage.execution import Executor, LocalPool
from ctcurate.leakage.hashing import HASH_VERSION, THUMB, Fingerprint, describe_image, file_sha256
from ctcurate.leakage.keypoints import Keypoints
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.store import open_cache, select_in

VERIFY_VERSION = "7"

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
_COLUMNS = {
    "leakage_fingerprint": ("sha256", "version", "meta", "thumb"),
    "leakage_keypoints": ("sha256", "version", "meta", "xy", "desc", "xy_m", "desc_m"),
    "leakage_verdict": ("pair", "verdict"),
    "leakage_stat": ("path", "size", "mtime_ns", "sha256"),
}
HASH_FIELDS = ("phash", "phash_m")

Progress = Callable[[int, int], None]


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


class BadRow(ValueError):
    """A cache row this version cannot read (edited, truncated, written by something else)."""


def _from_row(meta_text: object, thumb: object) -> Fingerprint:
    """The fingerprint a row holds; `BadRow` for anything but what `_to_row` writes."""
    try:
        meta = json.loads(meta_text)  # type: ignore[arg-type]
        if not isinstance(thumb, bytes) or len(thumb) != THUMB * THUMB:
            raise BadRow("thumbnail of the wrong size")
        box = tuple(int(v) for v in meta["box"])
        fp = Fingerprint(
            width=int(meta["width"]),
            height=int(meta["height"]),
            box=box,  # type: ignore[arg-type]
            thumb=thumb,
            **{k: int(meta[k], 16) for k in HASH_FIELDS},
            sub_phash=tuple(int(h, 16) for h in meta.get("sub_phash", ())),
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BadRow(str(exc)) from exc
    if len(box) != 4:
        raise BadRow("box is not four numbers")
    return fp


def _keypoints_from_row(meta_text: object, *blobs: object) -> Keypoints:
    """The keypoints a row holds; `BadRow` for anything but what `put_keypoints` writes."""
    try:
        meta = json.loads(meta_text)  # type: ignore[arg-type]
        xy, desc, xy_m, desc_m = blobs
        if not (isinstance(xy, bytes) and isinstance(desc, bytes) and isinstance(xy_m, bytes) and isinstance(desc_m, bytes)):
            raise BadRow("not bytes")
        kp = Keypoints(int(meta["width"]), int(meta["height"]), float(meta["scale"]), xy, desc, xy_m, desc_m)
        for mirrored in (False, True):
            if len(kp.points(mirrored)) != len(kp.descriptors(mirrored)):
                raise BadRow("positions and descriptors disagree")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BadRow(str(exc)) from exc
    return kp


_VERDICT_KEYS: dict[str, type | tuple[type, ...]] = {
    "duplicate": bool, "score": (int, float), "mirrored": bool, "evidence": dict}


def _verdict_from_row(text: object) -> dict[str, Any]:
    """A stored verdict; `BadRow` unless it has the fields `_find_pairs` reads, of their types."""
    try:
        verdict = json.loads(text)  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadRow(str(exc)) from exc
    if not isinstance(verdict, dict) or not all(isinstance(verdict.get(k), t) for k, t in _VERDICT_KEYS.items()):
        raise BadRow("not a verdict")
    return verdict


_SHA256 = re.compile(r"[0-9a-f]{64}")


class HashCache:
    """The leakage tables of one cache file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []  # a damaged file moved aside, damaged rows dropped: said once each
        self.conn: sqlite3.Connection = open_cache(path, on_damage=self.warnings.append)
        self._drop_foreign_tables()
        self.conn.executescript(_SCHEMA)

    def _drop_foreign_tables(self) -> None:
        """A leakage table with other columns than ours (edited, or another program's) is rebuilt."""
        for table, columns in _COLUMNS.items():
            found = tuple(r[1] for r in self.conn.execute(f"PRAGMA table_info({table})"))
            if found and found != columns:
                self.conn.execute(f"DROP TABLE {table}")
                self.warnings.append(f"{self.path}: table {table} had unexpected columns; rebuilt")

    def _drop(self, table: str, key: str, keys: Sequence[object]) -> None:
        """Delete rows that could not be read, so they are recomputed and stored again, and say so once."""
        if not keys:
            return
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            self.conn.execute(f"DELETE FROM {table} WHERE {key} IN ({','.join('?' * len(part))})", part)
        self.conn.commit()
        self.warnings.append(f"{self.path}: {len(keys)} damaged row(s) of {table} dropped; recomputed")

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
        bad = []
        for sha, meta, thumb in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION):
            try:
                out[sha] = _from_row(meta, thumb)
            except BadRow:
                bad.append(sha)
        self._drop("leakage_fingerprint", "sha256", bad)
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
        bad = []
        for sha, meta, *blobs in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION):
            try:
                out[sha] = _keypoints_from_row(meta, *blobs)
            except BadRow:
                bad.append(sha)
        self._drop("leakage_keypoints", "sha256", bad)
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
            if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
                continue  # a damaged row: the file is read again and the row replaced
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
        bad = []
        for key, text in select_in(self.conn, sql, sorted(set(keys))):
            try:
                out[key] = _verdict_from_row(text)
            except BadRow:
                bad.append(key)
        self._drop("leakage_verdict", "pair", bad)
        return out

    def get_search(self, key: str) -> list[list[Any]] | None:
        """A remembered keypoint candidate search (rows of `[a, b, mirrored, matrix, inliers, votes]`)."""
        rows = list(select_in(self.conn, "SELECT verdict FROM leakage_verdict WHERE pair IN ({marks})", [key]))
        if not rows:
            return None
        try:
            found = json.loads(rows[0][0])
            cands = found["candidates"]
            if not all(isinstance(c, list) and len(c) == 6 and isinstance(c[3], list) and len(c[3]) == 6 for c in cands):
                raise BadRow("not a candidate list")
        except (ValueError, TypeError, KeyError, RecursionError, BadRow):
            self._drop("leakage_verdict", "pair", [key])
            return None
        return list(cands)

    def put_search(self, key: str, rows: list[list[Any]]) -> None:
        self.put_verdicts([(key, {"candidates": rows})])

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


def _content_id(path: Path) -> tuple[int, int, str] | str:
    """(size, mtime, content sha256) of a file, or why it cannot be read. Runs on the workers."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns, file_sha256(path)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


FLUSH_EVERY = 2000  # fresh fingerprints written to the cache at a time: a killed run keeps most


def hash_files(
    paths: Sequence[Path],
    cache: HashCache | None,
    jobs: int | None = None,
    progress: Progress | None = None,
    workers: Executor | None = None,
) -> list[HashOutcome]:
    """Fingerprint every file, taking what the cache holds and hashing the rest on `workers`.

    Order follows `paths`. An unreadable file is an outcome with `error`, never an exception.
    Without `workers`, a local pool of `jobs` processes lives for this call.
    """
    executor = workers if workers is not None else LocalPool(jobs)
    try:
        return _hash_files(paths, cache, progress, executor)
    finally:
        if workers is None:
            executor.close()


def _hash_files(paths: Sequence[Path], cache: HashCache | None, progress: Progress | None, executor: Executor) -> list[HashOutcome]:
    shas, errors = _content_hashes(paths, cache, executor)
    known = _cached(cache, shas)
    first_of: dict[str, int] = {}  # identical files are described once
    for k, sha in enumerate(shas):
        if sha is not None and sha not in known and sha not in first_of:
            first_of[sha] = k
    done, total = len(paths) - len(first_of), len(paths)
    if progress:
        progress(done, total)
    fresh: dict[str, Described] = {}
    unwritten: list[tuple[str, Described]] = []
    results = executor.map(_hash_one, [paths[k] for k in first_of.values()])
    for (sha, k), (described, err) in zip(first_of.items(), results):
        if described is None:
            errors[k] = err or "cannot decode"
        else:
            fresh[sha] = described
            unwritten.append((sha, described))
        if cache and len(unwritten) >= FLUSH_EVERY:
            _store(cache, unwritten)
            unwritten = []
        done += 1
        if progress:
            progress(done, total)
    if cache and unwritten:
        _store(cache, unwritten)
    return [_outcome(p, shas[k], errors.get(k), known, fresh, errors.get(first_of.get(shas[k] or "", -1)))
            for k, p in enumerate(paths)]


def _content_hashes(paths: Sequence[Path], cache: HashCache | None, executor: Executor) -> tuple[list[str | None], dict[int, str]]:
    """The sha256 of every file (remembered ones by size and mtime, the rest on the workers), and why a file could not be read."""
    shas: list[str | None] = []
    errors: dict[int, str] = {}
    remembered = cache.known_shas(paths) if cache else {}
    unknown = [k for k, p in enumerate(paths) if p not in remembered]
    ids = dict(zip(unknown, executor.map(_content_id, [paths[k] for k in unknown])))
    new_stats: list[tuple[Path, int, int, str]] = []
    for k, p in enumerate(paths):
        if p in remembered:
            shas.append(remembered[p])
            continue
        got = ids[k]
        if isinstance(got, str):
            shas.append(None)
            errors[k] = got
            continue
        shas.append(got[2])
        new_stats.append((p, *got))
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


def _store(cache: HashCache, items: Sequence[tuple[str, Described]]) -> None:
    cache.put_many([(sha, d[0]) for sha, d in items])
    cache.put_keypoints([(sha, d[1]) for sha, d in items])


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
