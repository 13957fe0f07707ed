"""Synthetic ORB descriptors for the keypoint search benchmark, computed on demand (never held).

`SyntheticDescriptors(n)` is a `ctcurate.leakage.keypoints.DescriptorSource` of n images with
`features` random 256-bit descriptors per view (direct and mirrored) at random positions; 1 % of
the images are planted copies of another (their direct view: the other's direct descriptors with
7 random bit positions of every 64-bit word set to flip, the points rotated by up to 14 degrees, scaled 0.6-1.6x and shifted).
Every word is a hash of (descriptor, column), so any chunk can be read again without storing the
set: at 1,000,000 images the 10 GB of descriptors never exist at once (only the planted pairs'
are kept once drawn: 100 MB there). Deterministic.
"""

from __future__ import annotations

import numpy as np

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_BLOCK = 64  # views drawn together from one random stream (small: a candidate pair's views are read alone)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash of each value."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _raw(seed: list[int], n: int) -> np.ndarray:
    return np.asarray(np.random.SFC64(seed).random_raw(n), dtype=np.uint64)


class SyntheticDescriptors:
    def __init__(self, n: int, features: int = 160, seed: int = 0) -> None:
        self.left, self.n, self.f, self.seed = n, n, features, seed
        m = n // 100
        self.copies = 100 * np.arange(m, dtype=np.int64) + 37  # images that are copies
        self.originals = 100 * ((np.arange(m, dtype=np.int64) * 7919 + 3) % max(m, 1)) + 71
        self._copy_of = np.full(n, -1, dtype=np.int64)
        self._copy_of[self.copies] = np.arange(m)
        self._last: dict[tuple[int, int], np.ndarray] = {}
        self._alone_words: dict[int, np.ndarray] = {}
        self._special = np.sort(np.r_[2 * self.copies, 2 * self.originals])  # direct views drawn alone

    def planted(self) -> set[tuple[int, int]]:
        return {(min(a, b), max(a, b)) for a, b in zip(self.originals.tolist(), self.copies.tolist())}

    def sizes(self) -> np.ndarray:
        return np.full(2 * self.n, self.f, dtype=np.int64)

    def _alone(self, view: int) -> np.ndarray:
        """(f, 4) words of an original's direct view, or of a copy's: its original's, bits flipped.
        Drawn once each (2 % of the views, 5 KB each): seeding a generator per view per read cost
        a fifth of the 100k search's measured time (14.2-19.2 s against 11.5-14.3 s)."""
        words = self._alone_words.get(view)
        if words is None:
            words = self._alone_words[view] = self._draw_alone(view)
        return words

    def _draw_alone(self, view: int) -> np.ndarray:
        k = int(self._copy_of[view >> 1])
        if k < 0:
            return _raw([self.seed, 1, view], 4 * self.f).reshape(-1, 4)
        base = self._alone(2 * int(self.originals[k]))
        pos = np.random.default_rng([self.seed, 2, view]).integers(0, 64, (self.f, 4, 7)).astype(np.uint64)
        noise = np.bitwise_or.reduce(np.uint64(1) << pos, axis=2)
        flipped: np.ndarray = base ^ noise
        return flipped

    def _columns(self, start: int, stop: int, cols: set[int]) -> dict[int, np.ndarray]:
        """Words `cols` (0-3) of every descriptor of views start..stop-1, (n,) each."""
        first, last = start // _BLOCK, (stop - 1) // _BLOCK
        lo_cut, hi_cut = (start - first * _BLOCK) * self.f, (stop - last * _BLOCK) * self.f
        out = {}
        for c in cols:
            parts = [self._block(b, c) for b in range(first, last + 1)]
            parts[-1] = parts[-1][:hi_cut]
            parts[0] = parts[0][lo_cut:]
            out[c] = np.concatenate(parts)
        lo, hi = np.searchsorted(self._special, [start, stop])
        for v in self._special[lo:hi].tolist():
            alone = self._alone(v)
            for c in cols:
                out[c][(v - start) * self.f : (v - start + 1) * self.f] = alone[:, c]
        return out

    def _block(self, b: int, col: int) -> np.ndarray:
        if (b, col) not in self._last:  # chunks share their edge blocks
            if len(self._last) > 8:
                self._last.clear()
            self._last[(b, col)] = _raw([self.seed, 0, b, col], self.f * _BLOCK)
        return self._last[(b, col)]

    def words(self, start: int, stop: int, offsets: tuple[int, ...]) -> list[np.ndarray]:
        w = self._columns(start, stop, {c for o in offsets for c in (o // 8, (o + 4) // 8 % 4)})
        return [w[o // 8].copy() if o % 8 == 0 else (w[o // 8] << np.uint64(32)) | (w[(o + 4) // 8 % 4] >> np.uint64(32)) for o in offsets]

    def descriptors(self, view: int) -> np.ndarray:
        w = self._columns(view, view + 1, {0, 1, 2, 3})
        return np.stack([w[c] for c in range(4)], axis=1).astype(">u8").view(np.uint8).reshape(-1, 32)
    def _uniform(self, view: int) -> np.ndarray:
        ids = np.arange(view * 2 * self.f, (view + 1) * 2 * self.f, dtype=np.uint64)
        u = (_mix(ids * np.uint64(7) + np.uint64(self.seed)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return (320 * u).reshape(-1, 2).astype(np.float32)

    def points(self, view: int) -> np.ndarray:
        k = int(self._copy_of[view >> 1])
        if k < 0 or view & 1:
            return self._uniform(view)
        h = _mix(np.array([k, k + (1 << 40)], dtype=np.uint64) + np.uint64(self.seed << 48))
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        angle, scale = (u[0] - 0.5) * 0.5, 0.6 + u[1]
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        p = self._uniform(2 * int(self.originals[k]))
        moved: np.ndarray = (p @ np.array([[c, s], [-s, c]]) + 20).astype(np.float32)
        return moved
