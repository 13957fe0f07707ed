"""Fingerprints and pair verdicts, cached in the shared SQLite file so a second run re-hashes nothing.

Owns the leakage tables in `store.open_cache`'s file: fingerprints and keypoints keyed by the
file's content sha256 and `hashing.HASH_VERSION` (a renamed file is not re-hashed, a changed one
is), and verdicts keyed by the two content hashes and `VERIFY_VERSION`. Also owns describing a list
of files on an `execution.Executor` (local processes or a Dask cluster) into a `HashIndex`, the
compact arrays a search needs (about 250 bytes per image: a million images fit a small client),
with fingerprints and keypoints read back from the cache when a step needs them (the keypoint
search reads them through `IndexKeypoints`, a chunk of images at a time); only this process
writes the cache, in batches. Also remembers the metadata sheets' key columns while the file's
size and mtime are unchanged (`sheet_keys`: a warm run neither parses a sheet nor imports openpyxl).
Imports `execution`, `hashing`, `keypoints`, `dataset`, `images`, `store`; never prints
(progress is a callback).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ctcurate.leakage.execution import Executor, LocalPool
from ctcurate.leakage.hashing import HASH_VERSION, THUMB, Fingerprint, describe_image, file_sha256
from ctcurate.leakage.keypoints import DESCRIPTOR_BYTES, Keypoints, words_at
from ctcurate.core.dataset import KeyRow, read_sheet_keys
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.store import open_cache, select_in

VERIFY_VERSION = "7"
SHEET_KEYS_VERSION = "1"  # what `sheet_keys` remembers of a sheet; raise it when `dataset.KeyRow` changes

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
_T = TypeVar("_T")

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
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BadRow(str(exc)) from exc
    if len(box) != 4:
        raise BadRow("box is not four numbers")
    return fp


def _hashes_from_meta(meta_text: object) -> tuple[int, int]:
    """The pHashes (direct, mirrored) a row's meta holds; `BadRow` as `_from_row`."""
    try:
        meta = json.loads(meta_text)  # type: ignore[arg-type]
        direct, mirrored = (int(meta[k], 16) for k in HASH_FIELDS)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BadRow(str(exc)) from exc
    if not all(0 <= h < 1 << 64 for h in (direct, mirrored)):
        raise BadRow("not a 64-bit pHash")
    return direct, mirrored


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

    def _parsed(self, table: str, key: str, sql: str, keys: Sequence[str], parse: Callable[..., _T], *params: object) -> dict[str, _T]:
        """Rows of `sql` for these keys, each read by `parse(*columns)`; a row it cannot read
        (`BadRow`) is dropped, so that it is made again (and said once)."""
        out: dict[str, _T] = {}
        bad = []
        for k, *columns in select_in(self.conn, sql, sorted(set(keys)), *params):
            try:
                out[k] = parse(*columns)
            except BadRow:
                bad.append(k)
        self._drop(table, key, bad)
        return out

    def get_many(self, shas: Sequence[str]) -> dict[str, Fingerprint]:
        sql = "SELECT sha256, meta, thumb FROM leakage_fingerprint WHERE version = ? AND sha256 IN ({marks})"
        return self._parsed("leakage_fingerprint", "sha256", sql, shas, _from_row, HASH_VERSION)

    def put_many(self, items: Sequence[tuple[str, Fingerprint]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO leakage_fingerprint (sha256, version, meta, thumb) VALUES (?, ?, ?, ?)",
            [(sha, HASH_VERSION, *_to_row(fp)) for sha, fp in items],
        )
        self.conn.commit()

    def get_hashes(self, shas: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The pHashes of these contents (direct, mirrored): what an index holds, read
        without the thumbnails (4 KB a row; read when a pair is judged)."""
        sql = "SELECT sha256, meta FROM leakage_fingerprint WHERE version = ? AND sha256 IN ({marks})"
        return self._parsed("leakage_fingerprint", "sha256", sql, shas, _hashes_from_meta, HASH_VERSION)

    def keypoint_sizes(self, shas: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Descriptors of the direct and the mirrored view per content, without reading them."""
        sql = "SELECT sha256, length(desc), length(desc_m) FROM leakage_keypoints WHERE version = ? AND sha256 IN ({marks})"
        return {sha: (int(n) // DESCRIPTOR_BYTES, int(m) // DESCRIPTOR_BYTES)
                for sha, n, m in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION)}

    def get_keypoints(self, shas: Sequence[str]) -> dict[str, Keypoints]:
        sql = "SELECT sha256, meta, xy, desc, xy_m, desc_m FROM leakage_keypoints WHERE version = ? AND sha256 IN ({marks})"
        return self._parsed("leakage_keypoints", "sha256", sql, shas, _keypoints_from_row, HASH_VERSION)

    def get_descriptors(self, shas: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        """The descriptors (direct, mirrored) of these contents, without their positions or
        fingerprints; a row that does not hold whole descriptors is left out (read in full, it is
        dropped and made again)."""
        sql = "SELECT sha256, desc, desc_m FROM leakage_keypoints WHERE version = ? AND sha256 IN ({marks})"
        return {sha: (d, m) for sha, d, m in select_in(self.conn, sql, sorted(set(shas)), HASH_VERSION)
                if isinstance(d, bytes) and isinstance(m, bytes) and not len(d) % DESCRIPTOR_BYTES and not len(m) % DESCRIPTOR_BYTES}

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
        by_name = dict(zip(_stat_keys(paths), paths))
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
            [(key, size, mtime, sha) for key, (_, size, mtime, sha) in zip(_stat_keys([p for p, *_ in items]), items)],
        )
        self.conn.commit()

    @staticmethod
    def pair_key(sha_a: str, sha_b: str) -> str:
        lo, hi = sorted((sha_a, sha_b))
        return f"{lo}:{hi}:{HASH_VERSION}:{VERIFY_VERSION}"

    def get_verdicts(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        sql = "SELECT pair, verdict FROM leakage_verdict WHERE pair IN ({marks})"
        return self._parsed("leakage_verdict", "pair", sql, keys, _verdict_from_row)

    def _remembered(self, key: str, field: str, valid: Callable[[Any], bool], stamp: list[Any] | None = None) -> list[Any] | None:
        """The list under `field` of the result remembered at `key`, if every item is `valid` (and
        it was stored with this `stamp`); a damaged one is dropped (and said once), so that the
        result is made again."""
        rows = list(select_in(self.conn, "SELECT verdict FROM leakage_verdict WHERE pair IN ({marks})", [key]))
        if not rows:
            return None
        try:
            value = json.loads(rows[0][0])
            if stamp is not None and value.get("stamp") != stamp:
                return None  # made from an older file: made again, and replaced
            items = value[field]
            if not all(valid(x) for x in items):
                raise BadRow(f"not a list of {field}")
        except (ValueError, TypeError, KeyError, RecursionError, BadRow):
            self._drop("leakage_verdict", "pair", [key])
            return None
        return list(items)

    def get_search(self, key: str) -> list[list[Any]] | None:
        """A remembered keypoint candidate search (rows of `[a, b, mirrored, matrix, inliers, votes]`)."""
        return self._remembered(key, "candidates", lambda c: isinstance(c, list) and len(c) == 6 and isinstance(c[3], list) and len(c[3]) == 6)

    def put_search(self, key: str, rows: list[list[Any]]) -> None:
        self.put_verdicts([(key, {"candidates": rows})])

    def get_found(self, key: str) -> list[dict[str, Any]] | None:
        """The pairs a whole search found, remembered for its exact list of contents (see `put_found`)."""
        return self._remembered(key, "found", _valid_found)

    def put_found(self, key: str, found: list[dict[str, Any]]) -> None:
        self.put_verdicts([(key, {"found": found})])

    def sheet_keys(self, path: Path, class_dir: str) -> list[KeyRow]:
        """`dataset.read_sheet_keys`, remembered while the file's size and mtime are unchanged: a
        warm run neither parses an unchanged sheet nor imports openpyxl."""
        try:
            st = os.stat(path)
        except OSError:
            return read_sheet_keys(path, class_dir)  # says why, as a SheetError
        key, stamp = f"sheet-keys:{class_dir}:{_stat_keys([path])[0]}", [st.st_size, st.st_mtime_ns, SHEET_KEYS_VERSION]
        rows = self._remembered(key, "rows", _valid_key_row, stamp)
        if rows is not None:
            return [KeyRow(class_dir, path, *r) for r in rows]
        keys = read_sheet_keys(path, class_dir)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):  # not remembered while it is being saved
            self.put_verdicts([(key, {"stamp": stamp, "rows": [[k.row, k.file_name, k.patient_id, k.doi] for k in keys]})])
        return keys

    def put_verdicts(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO leakage_verdict (pair, verdict) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in items],
        )
        self.conn.commit()


Described = tuple[Fingerprint, Keypoints]


def _valid_key_row(r: object) -> bool:
    return (isinstance(r, list) and len(r) == 4 and isinstance(r[0], int) and not isinstance(r[0], bool)
            and all(v is None or isinstance(v, str) for v in r[1:]))


def _valid_found(f: object) -> bool:
    """A found pair as `pipeline` stores it (a damaged row is searched again, not trusted)."""
    if not isinstance(f, dict) or not {"i", "j", "stage", "distance", "exact", "verdict", "transform"} <= f.keys():
        return False
    v, t = f["verdict"], f["transform"]
    return (isinstance(f["i"], int) and isinstance(f["j"], int) and isinstance(f["stage"], str)
            and (f["distance"] is None or isinstance(f["distance"], int)) and (f["exact"] is None or isinstance(f["exact"], str))
            and (v is None or (isinstance(v, dict) and {"duplicate", "score", "mirrored", "evidence"} <= v.keys()
                               and isinstance(v["evidence"], dict)))
            and (t is None or (isinstance(t, list) and len(t) == 3 and isinstance(t[0], list) and len(t[0]) == 6
                               and all(isinstance(x, int | float) for x in t[0]) and isinstance(t[1], int) and isinstance(t[2], int))))


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
# Fresh descriptions (~16 KB each: fingerprint and keypoints) the client holds beside the cache, up
# to ~64 MB: COVID-CT's cold run read them all back, 0.3-0.4 s of the client's CPU.
HELD_MOST = 4096


def hash_files(
    paths: Sequence[Path],
    cache: HashCache | None,
    jobs: int | None = None,
    progress: Progress | None = None,
    workers: Executor | None = None,
) -> list[HashOutcome]:
    """Fingerprint every file, taking what the cache holds and hashing the rest on `workers`.

    Order follows `paths`. An unreadable file is an outcome with `error`, never an exception.
    Without `workers`, a local pool of `jobs` processes lives for this call. Holds every
    fingerprint and keypoint set at once: a large collection goes through `index_files`.
    """
    return index_files(paths, cache, jobs, progress, workers).outcomes()


def index_files(
    paths: Sequence[Path],
    cache: HashCache | None,
    jobs: int | None = None,
    progress: Progress | None = None,
    workers: Executor | None = None,
) -> HashIndex:
    """`hash_files`, keeping in memory only what the search needs (`HashIndex`): the fingerprints
    and keypoints go to the cache as they come and are read back when a step needs them."""
    executor = workers if workers is not None else LocalPool(jobs)
    try:
        return _index_files(paths, cache, progress, executor)
    finally:
        if workers is None:
            executor.close()


_NO_SHA = b""
READ_CHUNK = 2000  # cache rows read at a time while indexing a warm collection


@dataclass
class HashIndex:
    """What the search needs of a list of files, as numpy arrays (about 250 bytes per image):
    content hashes and pHashes. Fingerprints (thumbnails) and keypoints stay
    in the cache and are read back for the images a step needs; the fresh ones are also held here,
    all of them without a cache, else the first `HELD_MOST` (a small collection is not read back
    from the cache it has just been written to). Row k is `paths[k]`."""

    paths: Sequence[Path]
    shas: np.ndarray  # (n,) S64 content sha256; empty where the file could not be read
    errors: dict[int, str]  # why a file has no fingerprint
    phash: np.ndarray  # (n,) uint64; 0 where there is no fingerprint
    phash_m: np.ndarray  # (n,) uint64
    readable: np.ndarray  # (n,) bool: has a fingerprint
    cached: np.ndarray  # (n,) bool: its fingerprint came from the cache
    cache: HashCache | None
    held: dict[str, tuple[Fingerprint, Keypoints | None]]  # fresh descriptions by sha

    def __len__(self) -> int:
        return len(self.paths)

    def sha(self, k: int) -> str:
        return bytes(self.shas[k]).decode()

    def part(self, start: int, stop: int) -> HashIndex:
        """Rows start..stop (views, not copies), with their errors renumbered."""
        errors = {k - start: e for k, e in self.errors.items() if start <= k < stop}
        return HashIndex(self.paths[start:stop], self.shas[start:stop], errors, self.phash[start:stop], self.phash_m[start:stop],
                         self.readable[start:stop], self.cached[start:stop], self.cache, self.held)

    def fingerprints(self, rows: Iterable[int]) -> dict[int, Fingerprint]:
        """The fingerprints of these (readable) rows: from the cache, else made again from the file."""
        return {k: d[0] for k, d in self._described(rows, keypoints=False).items()}

    def keypoints_of(self, rows: Iterable[int]) -> dict[int, Keypoints]:
        """The keypoints of these rows (the readable ones), read from the cache."""
        readable = [k for k in rows if self.readable[k]]
        return {k: kp for k, (_, kp) in self._described(readable, keypoints=True).items() if kp is not None}

    def descriptors_of(self, rows: Iterable[int]) -> dict[int, tuple[bytes, bytes]]:
        """The descriptors (direct, mirrored) of these rows (the readable ones): held ones, the rest
        read from the cache without the rest of their keypoints and fingerprints."""
        readable = [k for k in rows if self.readable[k]]
        out = {k: (kp.desc, kp.desc_m) for k in readable if (kp := self._held_keypoints(k)) is not None}
        rest = [k for k in readable if k not in out]
        known = self.cache.get_descriptors([self.sha(k) for k in rest]) if self.cache is not None and rest else {}
        out |= {k: known[self.sha(k)] for k in rest if self.sha(k) in known}
        missing = [k for k in readable if k not in out]  # gone from the cache since
        out |= {k: (kp.desc, kp.desc_m) for k, kp in self.keypoints_of(missing).items()}
        return out

    def keypoint_sizes(self) -> np.ndarray:
        """(n, 2) descriptors of each row's direct and mirrored view (0 where unreadable), read
        without the descriptors themselves."""
        out = np.zeros((len(self), 2), dtype=np.int64)
        rows = np.flatnonzero(self.readable).tolist()
        rest = [k for k in rows if self._held_keypoints(k) is None]
        known = self.cache.keypoint_sizes([self.sha(k) for k in rest]) if self.cache is not None and rest else {}
        missing = [k for k in rows if self.sha(k) not in known]
        for k, kp in self.keypoints_of(missing).items():  # held in memory, or gone from the cache
            known[self.sha(k)] = (len(kp.desc) // DESCRIPTOR_BYTES, len(kp.desc_m) // DESCRIPTOR_BYTES)
        for k in rows:
            out[k] = known.get(self.sha(k), (0, 0))
        return out

    def outcomes(self) -> list[HashOutcome]:
        """One `HashOutcome` per row, with its fingerprint and keypoints (all in memory at once)."""
        got = self._described(np.flatnonzero(self.readable).tolist(), keypoints=True)
        return [HashOutcome(p, self.sha(k), got[k][0], cached=bool(self.cached[k]), keypoints=got[k][1]) if k in got
                else HashOutcome(p, self.sha(k), None, self.errors.get(k, "cannot read")) for k, p in enumerate(self.paths)]

    def _held_keypoints(self, k: int) -> Keypoints | None:
        held = self.held.get(self.sha(k))
        return held[1] if held is not None else None

    def _described(self, rows: Iterable[int], keypoints: bool) -> dict[int, tuple[Fingerprint, Keypoints | None]]:
        by_sha: dict[str, list[int]] = {}
        for k in rows:
            by_sha.setdefault(self.sha(k), []).append(k)
        found = {sha: self.held[sha] for sha in by_sha if sha in self.held}
        if self.cache is not None and len(found) < len(by_sha):
            found |= _read_described(self.cache, [sha for sha in by_sha if sha not in found], keypoints)
        out: dict[int, tuple[Fingerprint, Keypoints | None]] = {}
        for sha, ks in by_sha.items():
            described = found.get(sha)
            if described is None:  # gone from the cache since (another program): made again, as a worker would
                described, err = _hash_one(Path(self.paths[ks[0]]))
                if described is None:
                    raise UnreadableImage(Path(self.paths[ks[0]]), err or "cannot decode")
            for k in ks:
                out[k] = described
        return out


class IndexKeypoints:
    """The keypoint search's `keypoints.DescriptorSource` over one or two `HashIndex`es: keypoints
    are read from the cache a chunk of images at a time, and the few a geometric check needs on
    demand, so the client never holds them all (~12 KB an image: 12 GB at a million images)."""

    def __init__(self, left: HashIndex, right: HashIndex | None, recent: int = 512) -> None:
        self._left, self._right = left, right
        self.left = len(left)
        self._recent: OrderedDict[tuple[int, int], Keypoints | None] = OrderedDict()
        self._most = recent

    def _at(self, view: int) -> tuple[int, int, bool]:
        """(side, row, mirrored) of a view: left image k is views 2k, 2k + 1; right image k is 2 * left + k."""
        return (0, view // 2, bool(view & 1)) if view < 2 * self.left else (1, view - 2 * self.left, False)

    def _index(self, side: int) -> HashIndex:
        index = self._left if side == 0 else self._right
        assert index is not None  # right views exist only in a search against a second index
        return index

    def sizes(self) -> np.ndarray:
        left = self._left.keypoint_sizes().reshape(-1)  # direct, mirrored, direct, ...
        right = self._right.keypoint_sizes()[:, 0] if self._right is not None else np.zeros(0, np.int64)
        return np.concatenate([left, right])

    def words(self, start: int, stop: int, offsets: tuple[int, ...]) -> list[np.ndarray]:
        views = [self._at(v) for v in range(start, stop)]
        got: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        for side in (0, 1):
            rows = sorted({row for s, row, _ in views if s == side})
            got |= {(side, k): d for k, d in self._index(side).descriptors_of(rows).items()} if rows else {}
        blob = b"".join(d[m] if (d := got.get((s, row))) else b"" for s, row, m in views)
        return words_at(np.frombuffer(blob, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES), offsets)

    def _one(self, view: int) -> tuple[Keypoints, bool]:
        side, row, mirrored = self._at(view)
        if (side, row) not in self._recent:
            self._recent[(side, row)] = self._index(side).keypoints_of([row]).get(row)
            if len(self._recent) > self._most:
                self._recent.popitem(last=False)
        self._recent.move_to_end((side, row))
        kp = self._recent[(side, row)]
        assert kp is not None  # only views with descriptors are matched
        return kp, mirrored

    def descriptors(self, view: int) -> np.ndarray:
        kp, mirrored = self._one(view)
        return kp.descriptors(mirrored)

    def points(self, view: int) -> np.ndarray:
        kp, mirrored = self._one(view)
        return kp.points(mirrored)


def _read_described(cache: HashCache, shas: list[str], keypoints: bool) -> dict[str, tuple[Fingerprint, Keypoints | None]]:
    """What the cache holds for these contents: fingerprints, and keypoints if asked (then only both)."""
    fps = cache.get_many(shas)
    if not keypoints:
        return {s: (fp, None) for s, fp in fps.items()}
    kps = cache.get_keypoints(shas)
    return {s: (fps[s], kps[s]) for s in fps if s in kps}


def _index_files(paths: Sequence[Path], cache: HashCache | None, progress: Progress | None, executor: Executor) -> HashIndex:
    shas, errors = _content_hashes(paths, cache, executor)
    index = _empty_index(paths, shas, errors, cache)
    uniq, first, inverse = np.unique(index.shas, return_index=True, return_inverse=True)
    table = _HashTable(np.zeros(len(uniq), np.uint64), np.zeros(len(uniq), np.uint64), np.zeros(len(uniq), bool), np.zeros(len(uniq), bool), {})
    rows = [u for u in range(len(uniq)) if uniq[u] != _NO_SHA]
    if cache is not None:
        _read_cached_hashes(cache, uniq, rows, table)
    missing = sorted((u for u in rows if not table.has[u]), key=lambda u: int(first[u]))
    _describe_missing(paths, uniq, first, missing, cache, index.held, table, progress, executor, len(paths))
    index.phash, index.phash_m = table.phash[inverse], table.phash_m[inverse]
    index.readable, index.cached = table.has[inverse], table.cached[inverse]
    for k in np.flatnonzero(~index.readable & (index.shas != _NO_SHA)).tolist():
        index.errors[k] = table.errors.get(int(inverse[k]), "cannot decode")  # a copy of a file that failed to decode
    return index


@dataclass
class _HashTable:
    """The hashes of each distinct content, while indexing."""

    phash: np.ndarray
    phash_m: np.ndarray
    has: np.ndarray
    cached: np.ndarray
    errors: dict[int, str]

    def put(self, u: int, phash: int, phash_m: int, cached: bool) -> None:
        self.phash[u], self.phash_m[u] = phash, phash_m
        self.has[u], self.cached[u] = True, cached


def _empty_index(paths: Sequence[Path], shas: np.ndarray, errors: dict[int, str], cache: HashCache | None) -> HashIndex:
    n = len(paths)
    return HashIndex(paths, shas, errors, np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, bool), np.zeros(n, bool), cache, {})


def _read_cached_hashes(cache: HashCache, uniq: np.ndarray, rows: list[int], table: _HashTable) -> None:
    """The hashes of the contents the cache holds complete (fingerprint and keypoints), a chunk at a time."""
    for start in range(0, len(rows), READ_CHUNK):
        part = rows[start : start + READ_CHUNK]
        shas = [bytes(uniq[u]).decode() for u in part]
        # thumbnails and keypoints are read when a pair is judged or searched
        hashes, with_keypoints = cache.get_hashes(shas), cache.keypoint_sizes(shas)
        for u, sha in zip(part, shas):
            if sha in hashes and sha in with_keypoints:
                table.put(u, *hashes[sha], cached=True)


def _describe_missing(
    paths: Sequence[Path], uniq: np.ndarray, first: np.ndarray, missing: list[int], cache: HashCache | None,
    held: dict[str, tuple[Fingerprint, Keypoints | None]], table: _HashTable, progress: Progress | None, executor: Executor, total: int,
) -> None:
    """Describe each content the cache lacks once (on the executor), storing it as it comes."""
    done = total - len(missing)
    if progress:
        progress(done, total)
    unwritten: list[tuple[str, Described]] = []
    results = executor.map(_hash_one, [paths[int(first[u])] for u in missing])
    for u, (described, err) in zip(missing, results):
        if described is None:
            table.errors[u] = err or "cannot decode"
        else:
            fp = described[0]
            table.put(u, fp.phash, fp.phash_m, cached=False)
            sha = bytes(uniq[u]).decode()
            if cache is None or len(held) < HELD_MOST:
                held[sha] = described
            if cache is not None:
                unwritten.append((sha, described))
        if cache and len(unwritten) >= FLUSH_EVERY:
            _store(cache, unwritten)
            unwritten = []
        done += 1
        if progress:
            progress(done, total)
    if cache and unwritten:
        _store(cache, unwritten)


STAT_CHUNK = 20_000  # files whose content hash is looked up or computed at a time


def _content_hashes(paths: Sequence[Path], cache: HashCache | None, executor: Executor) -> tuple[np.ndarray, dict[int, str]]:
    """The sha256 of every file (S64; empty where unreadable), and why a file could not be read.
    Remembered ones are taken by size and mtime, the rest computed on the workers, a chunk at a time."""
    shas = np.zeros(len(paths), dtype="S64")
    errors: dict[int, str] = {}
    for start in range(0, len(paths), STAT_CHUNK):
        part = paths[start : start + STAT_CHUNK]
        for k, got in enumerate(_content_hashes_of(part, cache, executor)):
            if isinstance(got, str):
                errors[start + k] = got
            else:
                shas[start + k] = got[2].encode()
    return shas, errors


def _content_hashes_of(paths: Sequence[Path], cache: HashCache | None, executor: Executor) -> list[str | tuple[int, int, str]]:
    """Per file: its sha256, or why it cannot be read; newly read ones remembered in the cache."""
    remembered = cache.known_shas(paths) if cache else {}
    unknown = [k for k, p in enumerate(paths) if p not in remembered]
    ids = dict(zip(unknown, executor.map(_content_id, [paths[k] for k in unknown])))
    out: list[str | tuple[int, int, str]] = []
    new_stats: list[tuple[Path, int, int, str]] = []
    for k, p in enumerate(paths):
        if p in remembered:
            out.append((0, 0, remembered[p]))
            continue
        got = ids[k]
        out.append(got)
        if not isinstance(got, str):
            new_stats.append((p, *got))
    if cache and new_stats:
        cache.remember_shas(new_stats)
    return out


def _stat_keys(paths: Sequence[Path]) -> list[str]:
    """Each file's key in the stat table: its folder resolved (once per folder: a symlinked or
    relative data root, `..`), then its name; resolving every file cost more than the rest of a warm run."""
    folders: dict[Path, Path] = {}
    keys = []
    for p in paths:
        folder = folders.get(p.parent)
        if folder is None:
            folder = folders[p.parent] = p.parent.resolve()
        keys.append(str(folder / p.name))
    return keys


def _store(cache: HashCache, items: Sequence[tuple[str, Described]]) -> None:
    cache.put_many([(sha, d[0]) for sha, d in items])
    cache.put_keypoints([(sha, d[1]) for sha, d in items])
