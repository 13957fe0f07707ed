"""Near-neighbour search over 64-bit hashes: every pair within a Hamming threshold, no Python loop.

Owns multi-index hashing (MIH): the 64 bits are cut into m blocks; two hashes within distance `t`
agree on some block up to `t // m` bits (pigeonhole), so each block is a bucket index probed with
every flip mask of up to `t // m` bits, and the few candidates are checked exactly with a
vectorized popcount. m = 4 (16-bit blocks) suits up to a few 100,000 hashes; beyond, 3 blocks of
21-22 bits keep the buckets small. Small inputs are compared pair by pair instead (faster there). Pure numpy; imports nothing from ctcurate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

_LARGE = 400_000  # from this many hashes on, three wider blocks beat four 16-bit ones
_BRUTE_MAX = 1 << 25  # query x database pairs up to which comparing them all is faster (measured: 746^2 9x, 746 x 17,904 1.7x)
_BRUTE_BLOCK = 1 << 20  # pairs compared at a time


def _block_widths(n: int) -> tuple[int, ...]:
    return (16, 16, 16, 16) if n < _LARGE else (21, 21, 22)


def _masks(bits: int, radius: int) -> np.ndarray:
    out = [0]
    for r in range(1, radius + 1):
        for chosen in combinations(range(bits), r):
            out.append(sum(1 << b for b in chosen))
    return np.array(out, dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise Hamming distance of two uint64 arrays."""
    return np.asarray(np.bitwise_count(np.bitwise_xor(a, b)), dtype=np.uint8)


@dataclass(frozen=True)
class _Block:
    """One block of bits bucketed: query keys, the database sorted by key, each bucket's size and start."""

    qkey: np.ndarray
    order: np.ndarray
    counts: np.ndarray
    starts: np.ndarray


def _bucket_block(q: np.ndarray, db: np.ndarray, offset: int, bits: int) -> _Block:
    """The bucket index of one block (`bits` wide, `offset` bits up) of every hash."""
    shift, field = np.uint64(offset), np.uint64((1 << bits) - 1)
    # 32-bit keys and counts: the tables stay small enough for the caches
    dkey = ((db >> shift) & field).astype(np.int32)
    qkey = ((q >> shift) & field).astype(np.int32)
    order = np.argsort(dkey, kind="stable")
    counts = np.bincount(dkey, minlength=1 << bits).astype(np.int32)
    starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)[:-1]))
    return _Block(qkey, order, counts, starts)


def _probe(block: _Block, mask: np.int32, self_join: bool, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate (query, database) index pairs whose block keys differ by `mask`, at most about `chunk` a time."""
    target = block.qkey ^ mask
    n = block.counts[target]
    if self_join and mask:
        # a pair (i, j) is seen from both ends with the same mask: probe from one end only
        hit = np.nonzero(n * (block.qkey < target))[0]
    else:
        hit = np.nonzero(n)[0]
    if len(hit) == 0:
        return
    n_hit = n[hit]
    # expand in chunks so that a crowded bucket cannot blow up memory
    bounds = np.searchsorted(np.cumsum(n_hit, dtype=np.int64), np.arange(chunk, int(n_hit.sum(dtype=np.int64)) + chunk, chunk))
    lo = 0
    for hi in np.unique(np.append(bounds, len(hit))):
        if hi <= lo:
            continue
        qi_part = hit[lo:hi]
        n_part = n_hit[lo:hi]
        qi = np.repeat(qi_part, n_part)
        first = np.repeat(block.starts[target[qi_part]], n_part)
        run = np.arange(len(qi)) - np.repeat(np.cumsum(n_part, dtype=np.int64) - n_part, n_part)
        yield qi, block.order[first + run]
        lo = hi


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.empty(0, dtype=np.int64)
    return empty, empty, np.empty(0, dtype=np.uint8)


def _pairs_within_brute(q: np.ndarray, threshold: int, db: np.ndarray, self_join: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pairs_within` by comparing every pair, a block of queries at a time: for small inputs
    (COVID-CT's 746 hashes) the index's 548 probes cost more than
    this. Same pairs, same order (by query, then database index)."""
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_d: list[np.ndarray] = []
    step = max(1, _BRUTE_BLOCK // len(db))
    for s in range(0, len(q), step):
        dist = np.bitwise_count(q[s : s + step, None] ^ db[None, :])
        near = dist <= threshold
        if self_join:
            near &= np.arange(len(db))[None, :] > np.arange(s, s + len(near))[:, None]
        i, j = np.nonzero(near)
        found_i.append(i + s)
        found_j.append(j)
        found_d.append(dist[i, j])
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d).astype(np.uint8)


def pairs_within(
    queries: np.ndarray,
    threshold: int,
    database: np.ndarray | None = None,
    *,
    chunk: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query index, database index, distance) with distance <= threshold.

    With `database` None it is a self-join of `queries` and returns each unordered pair once
    (i < j). Hashes are uint64 arrays. Memory stays O(n + chunk) whatever the result size.
    """
    q = np.ascontiguousarray(queries, dtype=np.uint64)
    self_join = database is None
    db = q if self_join else np.ascontiguousarray(database, dtype=np.uint64)
    if threshold < 0 or len(q) == 0 or len(db) == 0:
        return _no_pairs()
    if len(q) * len(db) <= _BRUTE_MAX:
        return _pairs_within_brute(q, threshold, db, self_join)
    widths = _block_widths(max(len(q), len(db)))
    radius = threshold // len(widths)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    offset = 0
    for bits in widths:
        block = _bucket_block(q, db, offset, bits)
        offset += bits
        for mask in _masks(bits, min(radius, bits)).astype(np.int32):
            for qi, dj in _probe(block, mask, self_join, chunk):
                keep = hamming(q[qi], db[dj]) <= threshold
                if self_join:
                    qi, dj = np.minimum(qi, dj), np.maximum(qi, dj)
                    keep &= qi < dj
                found_i.append(qi[keep])
                found_j.append(dj[keep])
    if not found_i:
        return _no_pairs()
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    key = np.unique(i.astype(np.int64) * len(db) + j)
    i, j = key // len(db), key % len(db)
    return i, j, hamming(q[i], db[j])


def pairs_within_any(
    hashes: np.ndarray,
    mirrored: np.ndarray,
    threshold: int,
    database: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs whose hashes are within `threshold` directly or with one side mirrored.

    The distance returned is the smaller of the two. Self-join when `database` is None.
    """
    direct = pairs_within(hashes, threshold, database)
    flipped = pairs_within(mirrored, threshold, hashes if database is None else database)
    fi, fj, fd = flipped
    if database is None:  # mirror(i) ~ j and mirror(j) ~ i are the same pair
        lo, hi = np.minimum(fi, fj), np.maximum(fi, fj)
        keep = lo != hi
        fi, fj, fd = lo[keep], hi[keep], fd[keep]
    n_db = len(hashes) if database is None else len(database)
    i = np.concatenate([direct[0], fi])
    j = np.concatenate([direct[1], fj])
    d = np.concatenate([direct[2], fd])
    if len(i) == 0:
        return i, j, d
    key = i * n_db + j
    order = np.lexsort((d, key))
    key, d = key[order], d[order]
    first = np.concatenate(([True], key[1:] != key[:-1]))
    key, d = key[first], d[first]
    return key // n_db, key % n_db, d

