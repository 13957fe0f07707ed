"""Local features of the normalized view, and the candidate stage built on them: copies a global hash misses.

A re-rendered figure (rotated, re-cropped, rescaled to a third, blurred, re-windowed) often hashes
far from its original, but it keeps most of its corners: ORB keypoints (OpenCV; measured against
SIFT and BRISK on transformed CT copies: the most inliers per true pair, 5x faster than SIFT, and
binary) of the trimmed view scaled to `SIDE` px, and of its mirror image, a few hundred 256-bit
descriptors per image.

Candidate search is sub-quadratic and its memory bounded: the descriptors of every view (the
mirrored view of one side against the direct view of the other covers mirror copies) are put in
a few sort orders, each led by another 64-bit slice of the 256 bits (locality-sensitive hashing:
neighbours in the sort share the longest prefixes, however crowded the short ones), and the
`WINDOW` nearest in each order within `MATCH_MAX` bits are correspondences, which vote for their
view pair; a pair with `MIN_VOTES` gets a geometric check (RANSAC similarity: rotation, uniform
scale, shift). The more descriptors, the shorter the share of a copied corner's prefix that
survives in a window, so `tables_for` adds sort orders with the size (2 on COVID-CT, 4 at 200,000
images). Each order is read once from a `DescriptorSource` in chunks (a source may stream them
from the cache) and sorted in partitions of at most about `PART` descriptors (consecutive
stretches of it, cut at quantiles of the leading words; beyond the first, which is filled in place,
they are spilled to temporary files as they are read), holding only the leading and check words and ids (~60 bytes a descriptor at the
peak of the sort): the search never holds all descriptors (10 GB at 1,000,000 images). Its
correspondences are spilled in buckets of source views and grouped one bucket at a time. The
transform found seeds the pixel alignment of `verify.verify_aligned`. Pure numpy and OpenCV;
imports only `core.heap` of ctcurate.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ctcurate.core.heap import kept_heap

SIDE = 320  # the trimmed view's long side for keypoints, px
FEATURES = 160  # keypoints kept per view (strongest first)
# FAST corner contrast: 20 (not 10) makes ORB 25% cheaper and finds as many pairs (the tuning set
# of transformed copies: the same 130 of 132, no false pair), since 160 corners per view remain
_FAST = 20
MATCH_MAX = 48  # bits two descriptors of one corner may differ by (unrelated ones: ~128)
MIN_VOTES = 16  # correspondences an image pair needs before the geometric check
MIN_INLIERS = 12  # correspondences agreeing on one similarity transform
_RANSAC_PX = 3.0  # reprojection tolerance at SIDE px
_SCALE_RANGE = (0.4, 2.5)  # of a plausible transform between two keypoint views
_FLIP = 1 / 9  # bits a copied corner's descriptor has flipped, for `tables_for`
_ENOUGH = 1 << 22  # descriptors (~13,000 images) up to which two sort orders meet a copy often enough
_MAX_TABLES = 8  # 64-bit words from byte 0, 8, 16, 24, then 4, 12, 20, 28
WINDOW = 8  # neighbours in each sort order that are compared
_CHECK_MAX = 22  # bits the check word (64) of two neighbours may differ by (one corner: <= 12 +- 3)
_PRE_MAX = 40  # bits the leading word and the check word (128) may differ by before the full check
PART = 1 << 25  # descriptors sorted at once: ~60 bytes each at the peak of the sort, ~2 GB (bounds the memory)
_SPLIT = 4  # spill buckets per partition: neighbouring buckets are joined into partitions of at most PART
_BUCKET_KEYS = 1 << 24  # correspondences grouped at once (~0.8 GB at the peak of `_groups`)
_MAX_BUCKETS = 256  # temporary files open at once while the correspondences are spilled
_CHUNK = 1 << 22  # descriptors compared at once
_READ = 1 << 20  # descriptors read from the source at once (about): ~32 MB of them, ~3,300 images
DESCRIPTOR_BYTES = _DESC = 32  # bytes per ORB descriptor
_POINT_BITS = 9  # a descriptor's id is view << _POINT_BITS | its keypoint's index in the view
_POINT_MASK = (1 << _POINT_BITS) - 1


@dataclass(frozen=True)
class Keypoints:
    """ORB keypoints of the trimmed view (`SIDE` px long side) and of its mirror image; compact bytes."""

    width: int  # of the keypoint view, px
    height: int
    scale: float  # keypoint-view px per source px of the trimmed box
    xy: bytes  # float16 (n, 2) positions in the view
    desc: bytes  # uint8 (n, 32)
    xy_m: bytes  # the same of the mirrored view (its own pixel grid)
    desc_m: bytes

    def points(self, mirrored: bool = False) -> np.ndarray:
        return np.frombuffer(self.xy_m if mirrored else self.xy, dtype=np.float16).reshape(-1, 2).astype(np.float32)

    def descriptors(self, mirrored: bool = False) -> np.ndarray:
        return np.frombuffer(self.desc_m if mirrored else self.desc, dtype=np.uint8).reshape(-1, _DESC)


_SCALE_STEP = 1.2  # ORB's pyramid: each level this much smaller than the one before


def _orb(view: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ORB keypoints of the view and of its mirror image: positions and descriptors of each.

    The mirror image's corners are the view's corners mirrored (FAST, the Harris score and the
    pyramid are mirror-symmetric; on the 746 COVID-CT views the two detections give the same
    points and descriptors): they are mirrored, not detected again, and only described (a quarter
    of the ORB time). The sets are the same; their order is ORB's (it describes given corners
    level by level), so the cached keypoints differ from a second detection's (from HASH_VERSION 9 on).
    """
    import cv2

    orb = cv2.ORB.create(nfeatures=FEATURES, scaleFactor=_SCALE_STEP, nlevels=8, edgeThreshold=15, patchSize=15, fastThreshold=_FAST)
    kp, des = orb.detectAndCompute(view, None)
    if des is None or not kp:
        none = (np.zeros((0, 2), np.float32), np.zeros((0, _DESC), np.uint8))
        return none + none
    width = view.shape[1]
    mirrored = []
    for k in kp:
        level = _SCALE_STEP**k.octave
        # mirrored on its own pyramid level (whose width ORB rounds), then brought back to the view
        x = (round(width / level) - 1 - k.pt[0] / level) * level
        mirrored.append(cv2.KeyPoint(x, k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave, k.class_id))
    kp_m, des_m = orb.compute(np.ascontiguousarray(view[:, ::-1]), mirrored)
    if des_m is None or not kp_m:
        kp_m, des_m = [], np.zeros((0, _DESC), np.uint8)
    return (np.array([k.pt for k in kp], dtype=np.float32), np.asarray(des, dtype=np.uint8),
            np.array([k.pt for k in kp_m], dtype=np.float32).reshape(-1, 2), np.asarray(des_m, dtype=np.uint8))


def keypoint_view(cropped: Image.Image) -> tuple[np.ndarray, float]:
    """The trimmed grayscale picture resized to `SIDE` px on its long side, and the factor used."""
    import cv2

    gray = np.asarray(cropped.convert("L") if cropped.mode != "L" else cropped)
    h, w = gray.shape
    f = SIDE / max(h, w)
    size = (max(8, round(w * f)), max(8, round(h * f)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR), f


def keypoints_of(cropped: Image.Image) -> Keypoints:
    """Keypoints of a trimmed view (the picture cut to `hashing.trimmed`'s box, at source resolution)."""
    view, f = keypoint_view(cropped)
    xy, desc, xy_m, desc_m = _orb(view)
    return Keypoints(
        width=view.shape[1],
        height=view.shape[0],
        scale=f,
        xy=xy.astype(np.float16).tobytes(),
        desc=desc.tobytes(),
        xy_m=xy_m.astype(np.float16).tobytes(),
        desc_m=desc_m.tobytes(),
    )


@dataclass(frozen=True)
class Transform:
    """What RANSAC found: `matrix` maps a's (mirrored, if so) keypoint view onto b's keypoint view."""

    matrix: tuple[float, ...]  # 2x3 row-major
    inliers: int
    votes: int

    @property
    def scale(self) -> float:
        m = self.matrix
        return float(math.hypot(m[0], m[3]))

    @property
    def angle(self) -> float:
        m = self.matrix
        return float(math.degrees(math.atan2(m[3], m[0])))


@dataclass(frozen=True)
class KeypointCandidate:
    """An image pair whose keypoints agree on one similarity transform."""

    a: int
    b: int  # index into the right list in a cross search
    mirrored: bool
    transform: Transform


def _ransac(src: np.ndarray, dst: np.ndarray, votes: int) -> Transform | None:
    import cv2

    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, maxIters=1000, confidence=0.995)
    if m is None or mask is None:
        return None
    t = Transform(tuple(float(v) for v in m.ravel()), int(mask.sum()), votes)
    # both views are SIDE px long: a copy rescaled or cropped to half the area stays well inside
    return t if _SCALE_RANGE[0] <= t.scale <= _SCALE_RANGE[1] else None




class DescriptorSource(Protocol):
    """What the search reads, view by view. Views: left image k is 2k (direct) and 2k + 1 (mirrored);
    in a cross search right image k is 2 * `left` + k (direct only). Read in chunks of consecutive
    views, so a source may stream them (from a cache, or computed) instead of holding them."""

    @property
    def left(self) -> int: ...  # images on the left

    def sizes(self) -> np.ndarray: ...  # (views,) descriptors per view

    def words(self, start: int, stop: int, offsets: tuple[int, ...]) -> list[np.ndarray]:
        """For each byte offset (a multiple of 4; wrapping round the 32 bytes), the 64 bits from it
        of every descriptor of views start..stop-1, read big-endian: (n,) uint64 each."""
        ...

    def descriptors(self, view: int) -> np.ndarray: ...  # (n, 32) uint8

    def points(self, view: int) -> np.ndarray: ...  # (n, 2) float32 positions in the view


def words_at(desc: np.ndarray, offsets: tuple[int, ...]) -> list[np.ndarray]:
    """The 64 bits of each (n, 32) uint8 descriptor from each byte offset (a multiple of 4,
    wrapping), read big-endian: byte `offset` leads the sort order. (n,) uint64 each."""
    half = np.ascontiguousarray(desc).view(">u4")
    return [(half[:, o // 4].astype(np.uint64) << np.uint64(32)) | half[:, (o // 4 + 1) % 8] for o in offsets]


class KeypointSource:
    """The `DescriptorSource` of `Keypoints` lists (None: an image without keypoints)."""

    def __init__(self, left: Sequence[Keypoints | None], right: Sequence[Keypoints | None] | None) -> None:
        self._left, self._right = left, right or []
        self.left = len(left)

    def _view(self, view: int) -> tuple[Keypoints | None, bool]:
        if view < 2 * self.left:
            return self._left[view // 2], bool(view & 1)
        return self._right[view - 2 * self.left], False

    def _desc_bytes(self, view: int) -> bytes:
        kp, mirrored = self._view(view)
        return b"" if kp is None else (kp.desc_m if mirrored else kp.desc)

    def sizes(self) -> np.ndarray:
        n = 2 * self.left + len(self._right)
        return np.array([len(self._desc_bytes(v)) // _DESC for v in range(n)], dtype=np.int64)

    def words(self, start: int, stop: int, offsets: tuple[int, ...]) -> list[np.ndarray]:
        blob = b"".join(self._desc_bytes(v) for v in range(start, stop))
        return words_at(np.frombuffer(blob, dtype=np.uint8).reshape(-1, _DESC), offsets)

    def descriptors(self, view: int) -> np.ndarray:
        return np.frombuffer(self._desc_bytes(view), dtype=np.uint8).reshape(-1, _DESC)

    def points(self, view: int) -> np.ndarray:
        kp, mirrored = self._view(view)
        assert kp is not None  # only views with descriptors are matched
        return kp.points(mirrored)


@dataclass(frozen=True)
class _Views:
    """How many descriptors each view has, where its run starts in a scan, and what each view is."""

    size: np.ndarray  # (views,) int64
    start: np.ndarray  # (views,) int64: position of the view's first descriptor in a scan
    total: int
    left: int
    cross: bool

    @staticmethod
    def of(source: DescriptorSource, cross: bool) -> _Views:
        size = source.sizes().astype(np.int64)
        if len(size) and (size.max() >= 1 << _POINT_BITS or len(size) >= 1 << (32 - _POINT_BITS)):
            raise ValueError("too many keypoints per view or too many views for the keypoint search")
        start = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64) if len(size) else np.zeros(0, np.int64)
        return _Views(size, start, int(size.sum()), source.left, cross)

    def ids(self, s: int, e: int) -> np.ndarray:
        """Ids (view << _POINT_BITS | point) of the descriptors of views s..e-1, in scan order."""
        size = self.size[s:e]
        first = np.repeat(self.start[s:e] - self.start[s], size)
        ids: np.ndarray = np.repeat(np.arange(s, e, dtype=np.int64) << _POINT_BITS, size) + np.arange(int(size.sum())) - first
        return ids

    @staticmethod
    def view_of(ids: np.ndarray) -> np.ndarray:
        return ids.astype(np.int64) >> _POINT_BITS

    def image(self, view: np.ndarray) -> np.ndarray:
        return np.where(view < 2 * self.left, view >> 1, view - 2 * self.left)

    def side(self, view: np.ndarray) -> np.ndarray:
        return (view >= 2 * self.left).astype(np.int64)


def _chunks(views: _Views) -> Iterator[tuple[int, int]]:
    """Ranges of consecutive views holding about `_READ` descriptors each."""
    n, s = len(views.start), 0
    while s < n:
        e = max(s + 1, int(np.searchsorted(views.start, views.start[s] + _READ, side="left")))
        yield s, min(e, n)
        s = min(e, n)


class _Spill:
    """Rows of a few parallel arrays written to temporary files by bucket as they come, then read
    back one bucket at a time, in order, each deleted once read: what bounds the memory of a step
    whose output is larger than it may hold (sort partitions, correspondence buckets)."""

    def __init__(self, folder: Path, buckets: int, dtypes: tuple[type, ...]) -> None:
        self.folder, self.buckets, self.dtypes = folder, buckets, dtypes
        self.files = [[open(self._path(b, i), "wb") for i in range(len(dtypes))] for b in range(buckets)]  # noqa: SIM115

    def _path(self, bucket: int, column: int) -> Path:
        return self.folder / f"{bucket}.{column}"

    def write(self, bucket: np.ndarray, columns: Sequence[np.ndarray]) -> None:
        """Append each row of `columns` to the files of its `bucket` (rows keep their order)."""
        self.write_grouped(np.argsort(bucket, kind="stable"), np.bincount(bucket, minlength=self.buckets), columns)

    def write_grouped(self, order: np.ndarray, counts: np.ndarray, columns: Sequence[np.ndarray], skip: int = 0) -> None:
        """`write`, the rows already grouped: `order` lists them by bucket, `counts` per bucket;
        the rows of the first `skip` buckets are not written."""
        bounds = np.r_[0, np.cumsum(counts)]
        for b in np.flatnonzero(np.diff(bounds)).tolist():
            if b < skip:
                continue
            rows = order[bounds[b] : bounds[b + 1]]
            for column, fh in zip(columns, self.files[b]):
                column[rows].tofile(fh)

    def close(self) -> None:
        for handles in self.files:
            for fh in handles:
                fh.close()

    def read(self) -> Iterator[tuple[np.ndarray, ...]]:
        self.close()
        for b in range(self.buckets):
            yield tuple(np.fromfile(self._path(b, i), dtype=d) for i, d in enumerate(self.dtypes))
            for i in range(len(self.dtypes)):
                self._path(b, i).unlink()


@contextmanager
def _spilled(prefix: str, buckets: int, dtypes: tuple[type, ...]) -> Iterator[_Spill]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        spill = _Spill(Path(tmp), buckets, dtypes)
        try:
            yield spill
        finally:
            spill.close()


_Partition = tuple[np.ndarray, np.ndarray, np.ndarray]  # leading words, check words, ids


def _partitions(source: DescriptorSource, views: _Views, table: int) -> Iterator[_Partition]:
    """The descriptors of one sort order in partitions of at most about `PART` (consecutive stretches
    of the order), read from the source once. With more than one, the order is cut into `_SPLIT`
    buckets per partition at quantiles of the first chunk's leading words (equal ranges of them are
    far from equal: CT corners crowd a few prefixes, 98% of them in one half of an order on mosaics
    of CT crops). The first partition's buckets are filled in place as they are read; the others
    are spilled to temporary files (20 bytes a descriptor), and neighbouring buckets are joined into
    partitions of at most `PART`, loaded one at a time."""
    lead = 8 * (table % 4) + 4 * (table // 4 % 2)
    cols = (lead, (lead + 16) % _DESC)
    chunks = ((*source.words(s, e, cols), views.ids(s, e).astype(np.uint32)) for s, e in _chunks(views))
    parts = max(1, -(-views.total // PART))
    dtypes = (np.uint64, np.uint64, np.uint32)
    if parts == 1:  # filled in place: the chunks are never held twice
        yield _filled(chunks, views.total, dtypes)
        return
    buckets = parts * _SPLIT
    sizes = np.zeros(buckets, np.int64)
    bounds: np.ndarray | None = None
    first: _Filling | None = _Filling(PART, dtypes)  # buckets [0, _SPLIT), unless they outgrow PART
    with _spilled("ctcurate-keypoints-", buckets, dtypes) as spill:
        for chunk in chunks:
            if not len(chunk[0]):
                continue
            if bounds is None:
                ranked = np.sort(chunk[0])
                bounds = ranked[(np.arange(1, buckets) * len(ranked)) // buckets]
                del ranked
            bucket = _bucket_of(bounds, chunk[0])
            order, counts = np.argsort(bucket, kind="stable"), np.bincount(bucket, minlength=buckets)
            sizes += counts
            skip = 0
            if first is not None:
                if first.take(order[: int(counts[:_SPLIT].sum())], chunk):
                    skip = _SPLIT
                else:  # the quantiles were off: the first buckets are spilled like the others
                    held, first = first.release(), None
                    spill.write(_bucket_of(bounds, held[0]), held)
                    del held
            spill.write_grouped(order, counts, chunk, skip)
        pieces, kept = spill.read(), 0
        if first is not None:
            yield first.release()
            first, kept = None, _SPLIT
            for _ in range(kept):
                next(pieces)  # the first buckets' files are empty
        for b, e in _joined(sizes[kept:]):
            yield _filled((next(pieces) for _ in range(b, e)), int(sizes[kept + b : kept + e].sum()), dtypes)


def _bucket_of(bounds: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """The spill bucket of each leading word, between the quantile `bounds`."""
    return np.searchsorted(bounds, lead, side="right").astype(np.uint16)


class _Filling:
    """A partition's columns filled in place as the source is read (never spilled, never copied)."""

    def __init__(self, capacity: int, dtypes: tuple[type, ...]) -> None:
        self.columns: tuple[np.ndarray, ...] = tuple(np.empty(capacity, d) for d in dtypes)  # touched as filled
        self.n = 0

    def take(self, rows: np.ndarray, chunk: Sequence[np.ndarray]) -> bool:
        """Append these rows of `chunk`, unless that would outgrow the capacity."""
        count = len(rows)
        if self.n + count > len(self.columns[0]):
            return False
        for column, values in zip(self.columns, chunk):
            np.take(values, rows, out=column[self.n : self.n + count])
        self.n += count
        return True

    def release(self) -> _Partition:
        whole, self.columns = self.columns, ()
        return tuple(c[: self.n] for c in whole)  # type: ignore[return-value]


def _joined(sizes: np.ndarray) -> Iterator[tuple[int, int]]:
    """Ranges of neighbouring buckets holding at most `PART` descriptors together (a larger bucket alone)."""
    b, n = 0, len(sizes)
    while b < n:
        e, total = b + 1, int(sizes[b])
        while e < n and total + int(sizes[e]) <= PART:
            total += int(sizes[e])
            e += 1
        yield b, e
        b = e


def _filled(pieces: Iterator[tuple[np.ndarray, ...]], total: int, dtypes: tuple[type, ...]) -> _Partition:
    """The pieces' columns one after the other, copied into arrays of `total` rows made first (no
    piece is held beside the whole, nor the whole twice)."""
    whole: tuple[np.ndarray, ...] = tuple(np.empty(total, d) for d in dtypes)
    at = 0
    for piece in pieces:
        for column, part in zip(whole, piece):
            column[at : at + len(part)] = part
        at += len(piece[0])
    return whole  # type: ignore[return-value]


def _ties(packed: np.ndarray, ibits: int) -> np.ndarray:
    """Whether each sorted value equals the next one above its low `ibits` bits (in chunks: no
    full-size temporaries)."""
    n = max(0, len(packed) - 1)
    ends = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    return np.concatenate([((packed[s + 1 : e + 1] ^ packed[s:e]) >> np.uint64(ibits)) == 0 for s, e in ends] or [np.zeros(0, bool)])


def _sorted(key: np.ndarray, check: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, check words in that order) of the partition sorted by its leading word, ties by
    position (deterministic). A plain sort of leading bits | position (~30x faster than a stable
    argsort); runs that tie on those bits (common: CT repeats its corners) are put in full-word
    order after. One gather (the check words): the rest is looked up for the few pairs that pass."""
    ibits = max(1, (len(key) - 1).bit_length())
    packed = ((key >> np.uint64(ibits)) << np.uint64(ibits)) | np.arange(len(key), dtype=np.uint64)
    packed.sort()
    tie = _ties(packed, ibits)
    packed &= np.uint64((1 << ibits) - 1)
    order = packed.view(np.int64)
    if tie.any():
        at = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        run = np.cumsum(np.r_[True, ~tie[at[1:] - 1]])
        sub = order[at]
        order[at] = sub[np.lexsort((sub, key[sub], run))]
    del tie
    return order, check[order]


def _neighbours(key: np.ndarray, check: np.ndarray, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Id pairs at most `WINDOW` apart in the partition's sort order (a prefix tree's neighbours,
    however crowded its short prefixes) whose check words differ by at most `_CHECK_MAX` bits and
    leading + check words by at most `_PRE_MAX`."""
    order, sorted_check = _sorted(key, check)
    n = len(order)
    for s in range(0, n, _CHUNK):
        for d in range(1, WINDOW + 1):
            e = min(s + _CHUNK, n - d)
            if e <= s:
                break
            dist = np.bitwise_count(sorted_check[s:e] ^ sorted_check[s + d : e + d])
            at = np.flatnonzero(dist <= _CHECK_MAX) + s
            p, q = order[at], order[at + d]
            near = np.bitwise_count(key[p] ^ key[q]) + dist[at - s] <= _PRE_MAX
            yield ids[p[near]], ids[q[near]]


def _oriented(views: _Views, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Packed src << 32 | dst of the id pairs that can be correspondences: two images (a left and a
    right one in a cross search), never two mirrored views; the mirrored view is the source, else
    the left / lower image."""
    vp, vq = views.view_of(p), views.view_of(q)
    ip, iq, sp, sq = views.image(vp), views.image(vq), views.side(vp), views.side(vq)
    mp, mq = (vp < 2 * views.left) & (vp & 1 == 1), (vq < 2 * views.left) & (vq & 1 == 1)
    keep = ~(mp & mq) & ((sp != sq) if views.cross else (ip != iq))
    swap = mq | (~mp & ((sp > sq) | ((sp == sq) & (ip > iq))))
    src, dst = np.where(swap, q, p)[keep], np.where(swap, p, q)[keep]
    packed: np.ndarray = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    return packed


def tables_for(total: int) -> int:
    """Sort orders for `total` descriptors. A window of `WINDOW` neighbours spans a shared prefix of
    about log2(total / WINDOW) bits, so the more descriptors, the less often a copied corner (1 in
    `_FLIP` bits flipped) sits in it; enough orders that the chance of meeting it in at least one
    stays what two orders give over `_ENOUGH` descriptors (2 up to ~13,000 images, 4 at 200,000;
    two orders found every planted copy among 10,000 synthetic images, bench/bench_leakage.py)."""

    def chance(n: int) -> float:
        return float((1 - _FLIP) ** max(0.0, math.log2(max(n, 1) / WINDOW)))

    missed = (1 - chance(_ENOUGH)) ** 2
    need = math.log(missed) / math.log(1 - chance(total)) if total > _ENOUGH else 2
    return int(min(_MAX_TABLES, max(2, math.ceil(need - 1e-9))))


def _correspondence_keys(source: DescriptorSource, views: _Views, tables: int) -> np.ndarray:
    """Every candidate correspondence once, packed src << 32 | dst (descriptor ids), sorted."""
    found: list[np.ndarray] = []
    for table in range(tables):
        for partition in _partitions(source, views, table):
            for p, q in _neighbours(*partition):
                found.append(_oriented(views, p, q))
            del partition  # let go before the next one is loaded
        found = [_distinct(np.concatenate(found))] if found else []
    return found[0] if found else np.zeros(0, np.uint64)


def _buckets(views: _Views, tables: int) -> int:
    """How many buckets the correspondences are grouped in: at most `_BUCKET_KEYS` each, taking the
    most there can be (every window neighbour in every order), but never more files than `_MAX_BUCKETS`."""
    most = views.total * WINDOW * tables
    return int(min(_MAX_BUCKETS, max(1, -(-most // _BUCKET_KEYS))))


def _correspondence_buckets(source: DescriptorSource, views: _Views, tables: int) -> Iterator[np.ndarray]:
    """`_correspondence_keys` in buckets of consecutive source views, in order: a view pair's
    correspondences all fall in one, so each is grouped alone and only one is held. A collection of
    look-alikes (crops of a few pictures, neighbouring slices) has tens of millions of them, far
    more than its images; spilled to temporary files by bucket as they are found."""
    buckets = _buckets(views, tables)
    if buckets == 1:
        yield _correspondence_keys(source, views, tables)
        return
    n_views = max(1, len(views.size))
    with _spilled("ctcurate-correspondences-", buckets, (np.uint64,)) as spill:
        for table in range(tables):
            for partition in _partitions(source, views, table):
                for p, q in _neighbours(*partition):
                    keys = _oriented(views, p, q)
                    spill.write(((keys >> np.uint64(32 + _POINT_BITS)).astype(np.int64) * buckets) // n_views, (keys,))
                del partition  # let go before the next one is loaded
        for (keys,) in spill.read():
            keys = _distinct(keys)  # the bucket as read is let go before it is grouped
            yield keys


def _distinct(keys: np.ndarray) -> np.ndarray:
    keys.sort()
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def _full_distance(source: DescriptorSource, src_view: int, dst_view: int, sp: np.ndarray, dp: np.ndarray) -> np.ndarray:
    a, b = source.descriptors(src_view)[sp], source.descriptors(dst_view)[dp]
    dist: np.ndarray = np.bitwise_count(a ^ b).sum(axis=1)
    return dist


def _groups(keys: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(src view, dst view, src points, dst points) of every view pair with `MIN_VOTES` candidate
    correspondences, in order (most view pairs have a few: counted first with a plain sort). Holds
    two int64 per correspondence beside `keys` (the view pairs, and their sorted copy while counting)."""
    pair = _view_pairs(keys)
    voted = _voted(np.sort(pair))
    rows = _rows_in(pair, voted)
    rows = rows[np.argsort(pair[rows], kind="stable")]
    bounds = np.flatnonzero(np.r_[True, pair[rows][1:] != pair[rows][:-1], True]) if len(rows) else np.zeros(1, np.int64)
    del pair
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        r = rows[s:e]
        src, dst = (keys[r] >> np.uint64(32)).astype(np.int64), (keys[r] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        yield int(src[0] >> _POINT_BITS), int(dst[0] >> _POINT_BITS), src & _POINT_MASK, dst & _POINT_MASK


def _view_pairs(keys: np.ndarray) -> np.ndarray:
    """The (src view, dst view) of each correspondence, packed src << (32 - _POINT_BITS) | dst."""
    src = (keys >> np.uint64(32 + _POINT_BITS)).astype(np.int64)
    src <<= 32 - _POINT_BITS
    src |= ((keys & np.uint64(0xFFFFFFFF)) >> np.uint64(_POINT_BITS)).astype(np.int64)
    return src


def _voted(counted: np.ndarray) -> np.ndarray:
    """The distinct values that occur at least `MIN_VOTES` times in sorted `counted` (a run of them
    starts where a value equals the one `MIN_VOTES - 1` further on), in order; in chunks."""
    span = MIN_VOTES - 1
    found = [counted[s : e][counted[s : e] == counted[s + span : e + span]]
             for s in range(0, max(0, len(counted) - span), _CHUNK) for e in [min(s + _CHUNK, len(counted) - span)]]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _rows_in(pair: np.ndarray, voted: np.ndarray) -> np.ndarray:
    """The rows of `pair` whose value is in sorted `voted`, ascending; in chunks."""
    if not len(voted):
        return np.zeros(0, np.int64)
    found = []
    for s in range(0, len(pair), _CHUNK):
        part = pair[s : s + _CHUNK]
        at = np.minimum(np.searchsorted(voted, part), len(voted) - 1)
        found.append(np.flatnonzero(voted[at] == part) + s)
    return np.concatenate(found)


def search(source: DescriptorSource, cross: bool, tables: int | None = None) -> list[KeypointCandidate]:
    """Image pairs (a < b; or a left, b right if `cross`) whose keypoints agree on one transform:
    correspondences from the sort orders (`tables_for` the size, unless given), votes per view
    pair, the full check, then RANSAC."""
    views = _Views.of(source, cross)
    out: list[KeypointCandidate] = []
    tables = tables or tables_for(views.total)
    with kept_heap():  # its sorts and windows allocate and free GBs of temporaries
        for a, b, sp, dp in (group for keys in _correspondence_buckets(source, views, tables) for group in _groups(keys)):
            near = _full_distance(source, a, b, sp, dp) <= MATCH_MAX
            if near.sum() < MIN_VOTES:
                continue
            t = _ransac(source.points(a)[sp[near]], source.points(b)[dp[near]], int(near.sum()))
            if t is not None and t.inliers >= MIN_INLIERS:
                ia, ib = views.image(np.array([a, b])).tolist()
                out.append(KeypointCandidate(ia, ib, bool(a < 2 * views.left and a & 1), t))
    return _best_per_pair(out)


def _best_per_pair(cands: list[KeypointCandidate]) -> list[KeypointCandidate]:
    """One candidate per image pair (either way round): the orientation with the most inliers."""
    best: dict[tuple[int, int], KeypointCandidate] = {}
    for c in cands:
        pair = (min(c.a, c.b), max(c.a, c.b))
        old = best.get(pair)
        if old is None or c.transform.inliers > old.transform.inliers:
            best[pair] = c
    return [best[k] for k in sorted(best)]


def keypoint_candidates(left: Sequence[Keypoints | None], right: Sequence[Keypoints | None] | None = None) -> list[KeypointCandidate]:
    """Image pairs (a < b within `left`; or a in left, b in right) whose keypoints agree on one transform."""
    return search(KeypointSource(left, right), right is not None)
