"""Multi-index search finds exactly the pairs a brute-force scan finds; so does its pairwise path for
small inputs, in the same order. Every test runs on both paths."""

from __future__ import annotations

import numpy as np
import pytest

from ctcurate.leakage.search import hamming, pairs_within, pairs_within_any


@pytest.fixture(autouse=True, params=["index", "pairwise"])
def path(request, monkeypatch) -> str:
    from ctcurate.leakage import search

    monkeypatch.setattr(search, "_BRUTE_MAX", 0 if request.param == "index" else 1 << 40)
    monkeypatch.setattr(search, "_BRUTE_BLOCK", 1 << 12)  # several blocks of queries
    return str(request.param)


def test_both_paths_give_the_same_arrays_in_the_same_order(monkeypatch):
    from ctcurate.leakage import search

    h = _random_hashes(900, 200, seed=11)
    db = _random_hashes(700, 100, seed=12)
    got = {}
    for name, most in (("index", 0), ("pairwise", 1 << 40)):
        monkeypatch.setattr(search, "_BRUTE_MAX", most)
        got[name] = (pairs_within(h, 10), pairs_within(h, 8, db), pairs_within_any(h, h[::-1].copy(), 6))
    for a, b in zip(got["index"], got["pairwise"]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def _random_hashes(n: int, planted: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) ^ (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))
    for k in range(planted):  # near copies at every distance up to 14
        v = h[k]
        for bit in rng.choice(64, k % 15, replace=False):
            v ^= np.uint64(1) << np.uint64(int(bit))
        h[n - 1 - k] = v
    return h


def _brute(q: np.ndarray, t: int, db: np.ndarray | None = None) -> set[tuple[int, int]]:
    other = q if db is None else db
    d = np.bitwise_count(q[:, None] ^ other[None, :])
    i, j = np.nonzero(d <= t)
    return {(a, b) for a, b in zip(i.tolist(), j.tolist()) if db is not None or a < b}


@pytest.mark.parametrize("threshold", [0, 3, 7, 10, 13])
def test_self_join_matches_brute_force(threshold):
    h = _random_hashes(1500, 300, seed=threshold)
    i, j, d = pairs_within(h, threshold)
    assert set(zip(i.tolist(), j.tolist())) == _brute(h, threshold)
    assert np.array_equal(d, hamming(h[i], h[j]))


def test_query_against_database_matches_brute_force():
    db = _random_hashes(1200, 200, seed=1)
    q = db[:300] ^ np.uint64(0b1011)  # three bits off
    i, j, _ = pairs_within(q, 6, db)
    assert set(zip(i.tolist(), j.tolist())) == _brute(q, 6, db)
    assert {(k, k) for k in range(300)} <= set(zip(i.tolist(), j.tolist()))


def test_mirrored_hashes_pair_up_once():
    h = _random_hashes(500, 0, seed=2)
    m = _random_hashes(500, 0, seed=3)
    m[10] = h[20] ^ np.uint64(1)  # mirror of image 10 is one bit from image 20
    i, j, d = pairs_within_any(h, m, 4)
    pairs = list(zip(i.tolist(), j.tolist(), d.tolist()))
    assert (10, 20, 1) in pairs
    assert len({(a, b) for a, b, _ in pairs}) == len(pairs)


def test_empty_and_duplicates():
    i, j, d = pairs_within(np.array([], dtype=np.uint64), 10)
    assert len(i) == len(j) == len(d) == 0
    same = np.array([5, 5, 5], dtype=np.uint64)
    i, j, _ = pairs_within(same, 0)
    assert set(zip(i.tolist(), j.tolist())) == {(0, 1), (0, 2), (1, 2)}


def test_wide_block_layout_for_large_sets_matches_brute_force(monkeypatch):
    from ctcurate.leakage import search

    monkeypatch.setattr(search, "_LARGE", 100)  # use the three-block layout meant for >= 400,000 hashes
    assert search._block_widths(1000) == (21, 21, 22)
    h = _random_hashes(1200, 250, seed=7)
    for threshold in (4, 10):
        i, j, _ = pairs_within(h, threshold)
        assert set(zip(i.tolist(), j.tolist())) == _brute(h, threshold)
