"""Is a hash-close pair really one picture? The finer comparison behind every reported pair.

On CT many different scans look alike to a 64-bit hash, so a candidate pair is judged on its
pixels: both trimmed views are aligned (per-axis scale and shift, mirror-aware, found by phase
correlation over a scale grid and refined with Powell's method), then the band-pass detail
(vessels, bronchi, texture: what moves between slices and differs between patients) is correlated
block by block. The median block correlation is the score: a local annotation (arrow, text) spoils
a few blocks, not the median; a neighbouring slice or another patient spoils most of them.
Pure functions on decoded images and fingerprints; imports only `hashing` and `powell`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ctcurate.leakage.hashing import THUMB, Fingerprint, to_gray, trimmed
from ctcurate.leakage.powell import minimize_powell

QUICK_MIN = 0.85  # 64 px thumbnail correlation below which a hash-close pair is dropped at once
PRESCREEN_MIN = 0.90  # aligned detail correlation of the 64 px thumbnails needed to decode the pair
COARSE_MIN = 0.90  # 128 px aligned detail correlation needed to look closer
DETAIL_MIN = 0.93  # median block detail correlation of a duplicate (score)
GLOBAL_MIN = 0.80  # and its whole-picture detail correlation (annotations cost some of it)
# Share of the detailed area where both pictures carry detail of similar strength that disagrees.
# An overlay (arrow, text) or clipping puts strong detail on one side only and does not count; a
# follow-up scan of the same slice or a neighbouring slice disagrees with detail on both sides.
# Measured on COVID-CT: true copies <= 0.006, a same-level follow-up scan 0.009, neighbouring
# slices >= 0.04.
UNEXPLAINED_MAX = 0.0075
# How far from a duplicate a pair may be judged and still be looked at more closely. Measured on
# the tuning set and COVID-CT (49 pairs refined at full detail, 18 judged from both sides): the
# full-detail refinement raised a block median by at most 0.021, and judging from the other side
# raised it by at most 0.018 and lowered the unexplained share by at most 0.008. The margins
# below are over twice that: a pair beyond them cannot become a duplicate by the closer look.
_REFINE_MARGIN = 0.05  # below DETAIL_MIN by more: the full-detail refinement is skipped
_OTHER_SIDE_UNEXPLAINED = 4 * UNEXPLAINED_MAX  # above it: the other side is not judged

_COARSE = 128
_FINE = 288
_SCALES = (0.91, 0.955, 1.0, 1.045, 1.09)
_BAND = (1.5, 4.0)  # band-pass sigmas at the fine size, pixels
_GRID = 8


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one pair; `evidence` says which measurements held."""

    duplicate: bool
    score: float
    mirrored: bool
    evidence: dict[str, float | bool | str] = field(default_factory=dict)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    # sum / size is what ndarray.mean computes (same dtype, same rounding), without its overhead:
    # this runs ~15,000 times per dataset inside the alignment search
    a = a - a.sum() / a.size
    b = b - b.sum() / b.size
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


# Zoomed and shifted versions of a thumbnail, so that the quick check survives a copy that was
# cropped into the picture (its trimmed view is then stretched and shifted against the original).
_SHIFTS = (-0.03, 0.0, 0.03)  # of the thumbnail's side, each way
_VARIANTS = [(1.0, 0.0, 0.0)] + [(0.93, dx, dy) for dx in _SHIFTS for dy in _SHIFTS]


def _normalize_rows(t: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit length, in place where `t` is float32 already (no copy)."""
    t = t.reshape(len(t), -1).astype(np.float32, copy=False)
    t -= t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    t /= norm
    return t


def _interp_matrix(scale: float, shift: float, n: int = THUMB) -> np.ndarray:
    """n x n bilinear resampling matrix for the 1-D window (centre + shift, width scale)."""
    w = n * scale
    x0 = (n - w) / 2 + shift * n
    src = x0 + (np.arange(n) + 0.5) * (w / n) - 0.5
    src = np.clip(src, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).astype(np.float32)
    m = np.zeros((n, n), dtype=np.float32)
    m[np.arange(n), lo] += 1 - frac
    m[np.arange(n), hi] += frac
    return m


_MATS = [(_interp_matrix(s, dy), _interp_matrix(s, dx)) for s, dx, dy in _VARIANTS]


def _variants_many(thumbs: np.ndarray, block: int = 32) -> np.ndarray:
    """(n, V, D) normalized variants of n thumbnails (n, THUMB, THUMB): separable resampling.

    Made `block` thumbnails at a time straight into the result (each thumbnail's variants do not
    depend on the others), so the temporaries stay small beside it.
    """
    n, v = len(thumbs), len(_MATS)
    out = np.empty((n, v, THUMB * THUMB), dtype=np.float32)
    for s in range(0, n, block):
        part = np.stack([ry @ thumbs[s : s + block] @ rx.T for ry, rx in _MATS], axis=1)  # (b, V, T, T)
        out[s : s + block] = _normalize_rows(part.reshape(len(part) * v, -1)).reshape(len(part), v, -1)
    return out


def _thumbs(fps: Sequence[Fingerprint | None], idx: np.ndarray) -> np.ndarray:
    out = []
    for k in idx.tolist():
        fp = fps[k]
        assert fp is not None  # only fingerprinted images are paired
        out.append(fp.thumb_array())
    return np.stack(out).astype(np.float32)


def quick_scores(
    left: Sequence[Fingerprint | None], right: Sequence[Fingerprint | None], i: np.ndarray, j: np.ndarray, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnail correlation of many pairs (left[i], right[j]) at once, and whether mirrored won.

    Each side is also tried zoomed/shifted against the other (`_VARIANTS`), so crops still score.
    """
    if left is right:
        # one image list (the search within a dataset): each thumbnail's variants are made once
        both, inv = np.unique(np.concatenate([np.asarray(i), np.asarray(j)]), return_inverse=True)
        inv_i, inv_j = inv[: len(i)], inv[len(i) :]
        ta = _thumbs(left, both)
        va = vb = _variants_many(ta)
        vbm = _variants_many(np.ascontiguousarray(ta[:, :, ::-1]))
    else:
        li, inv_i = np.unique(np.asarray(i), return_inverse=True)
        rj, inv_j = np.unique(np.asarray(j), return_inverse=True)
        ta = _thumbs(left, li)
        tb = _thumbs(right, rj)
        va = _variants_many(ta)
        vb = _variants_many(tb)
        vbm = _variants_many(np.ascontiguousarray(tb[:, :, ::-1]))
    score = np.empty(len(inv_i), dtype=np.float32)
    mirrored = np.empty(len(inv_i), dtype=bool)
    for s in range(0, len(inv_i), chunk):
        x, y = inv_i[s : s + chunk], inv_j[s : s + chunk]
        a0, b0, bm0 = va[x, :1], vb[y, :1], vbm[y, :1]  # (n, 1, D)
        t = np.swapaxes
        direct = np.maximum((a0 @ t(vb[y], 1, 2)).max(axis=(1, 2)), (b0 @ t(va[x], 1, 2)).max(axis=(1, 2)))
        flipped = np.maximum((a0 @ t(vbm[y], 1, 2)).max(axis=(1, 2)), (bm0 @ t(va[x], 1, 2)).max(axis=(1, 2)))
        score[s : s + chunk] = np.maximum(direct, flipped)
        mirrored[s : s + chunk] = flipped > direct
    return score, mirrored


def quick_score(a: Fingerprint, b: Fingerprint) -> tuple[float, bool]:
    """`quick_scores` of one pair."""
    score, mirrored = quick_scores([a], [b], np.array([0]), np.array([0]))
    return float(score[0]), bool(mirrored[0])


def view(im: Image.Image, size: int) -> np.ndarray:
    """The trimmed grayscale view stretched to `size` x `size`, float32."""
    return views(im, (size,))[0]


def views(im: Image.Image, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """`view` at several sizes, converting and trimming the picture once."""
    gray = to_gray(im)
    box, _ = trimmed(gray)  # the same box as the fingerprint's thumbnail
    cropped = gray.crop(box)
    return [np.asarray(cropped.resize((n, n), Image.Resampling.LANCZOS), dtype=np.float32) for n in sizes]


def _warp(img: np.ndarray, p: np.ndarray | tuple[float, ...], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """`img` sampled at (sy * y + ty, sx * x + tx) for every pixel of a `shape` (default: img's) grid;
    NaN where that falls outside `img` (OpenCV: 7x faster than scipy's affine_transform here)."""
    import cv2

    sx, sy, tx, ty = (float(v) for v in p)
    h, w = shape if shape is not None else img.shape
    m = np.array([[sx, 0.0, tx], [0.0, sy, ty]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(img, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))


def _gauss(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, kernel to 4 sigma, mirrored edges (what scipy's gaussian_filter does, 6-10x faster)."""
    import cv2

    r = int(4.0 * sigma + 0.5)
    return cv2.GaussianBlur(a, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT)


def _bandpass(a: np.ndarray, s1: float = _BAND[0], s2: float = _BAND[1]) -> np.ndarray:
    return _gauss(a, s1) - _gauss(a, s2)


def _morph(mask: np.ndarray, iterations: int, dilate: bool) -> np.ndarray:
    """Binary erosion (or dilation) by the 4-neighbour cross, outside the picture counted as empty."""
    import cv2

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    out = (cv2.dilate if dilate else cv2.erode)(mask.astype(np.uint8), cross, iterations=iterations, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(out, dtype=bool)


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    return _morph(mask, iterations, dilate=False)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    return _morph(mask, iterations, dilate=True)


def _filled(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN (outside the warped picture) replaced by the mean of the rest (half the cost of nanmean)."""
    valid = ~np.isnan(w)
    n = int(np.count_nonzero(valid))
    out = np.where(valid, w, w.dtype.type(0))
    if n:
        out[~valid] = out.sum() / n
    return out, valid


def _spectrum(a: np.ndarray) -> np.ndarray:
    return np.fft.rfft2(a - a.mean())


def _phase_shifts(fa: np.ndarray, bs: list[np.ndarray]) -> list[tuple[int, int]]:
    """Integer shift of each of `bs` against the picture whose `_spectrum` is `fa`, in one batch."""
    fb = np.fft.rfft2(np.stack([b - b.mean() for b in bs]))
    r = fa * np.conj(fb)
    r /= np.abs(r) + 1e-9
    h, w = bs[0].shape
    corr = np.fft.irfft2(r, s=(h, w))
    out = []
    for k in corr.reshape(len(bs), -1).argmax(axis=1).tolist():
        ky, kx = divmod(k, w)
        out.append((ky if ky < h // 2 else ky - h, kx if kx < w // 2 else kx - w))
    return out


def _valid_box(w: np.ndarray) -> tuple[tuple[slice, slice], float]:
    """Where a warp by scale and shift (`_warp`) is not NaN, and its share of the picture: a
    rectangle (a pixel is valid when its column and its row are), so the comparison takes slices,
    not a mask (the mask was a quarter of an evaluation's time at 288 px)."""
    h, width = w.shape
    if np.isnan(w[h // 2, width // 2]):  # the centre is outside: find the rows and columns the long way
        valid = ~np.isnan(w)
        rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    else:  # through a valid pixel, a row is valid where the columns are, a column where the rows are
        rows, cols = np.flatnonzero(~np.isnan(w[:, width // 2])), np.flatnonzero(~np.isnan(w[h // 2]))
    if not len(rows):
        return (slice(0, 0), slice(0, 0)), 0.0
    return (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)), len(rows) * len(cols) / w.size


def _band_with_margin(b: np.ndarray, band: tuple[float, float], margin: int = 3) -> np.ndarray:
    """Band-pass `b` once; its border (where the filter saw padding) becomes NaN so warps drop it."""
    out = _bandpass(b, *band)
    out[:margin] = np.nan
    out[-margin:] = np.nan
    out[:, :margin] = np.nan
    out[:, -margin:] = np.nan
    return out


def _objective(a_band: np.ndarray, b_band: np.ndarray, p: np.ndarray) -> float:
    # warping the band-passed image equals band-passing the warped one for scales near 1
    w = _warp(b_band, p, a_band.shape)
    box, share = _valid_box(w)
    if share < 0.6:
        return 1.0
    return -_ncc(a_band[box].ravel(), w[box].ravel())


def _coarse_align(
    a: np.ndarray, b: np.ndarray, scales_x: tuple[float, ...] = _SCALES, scales_y: tuple[float, ...] = _SCALES
) -> tuple[float, np.ndarray]:
    """Best per-axis scale on a grid, each with its shift from phase correlation (a and b: square
    views of one size, scaled about their common centre)."""
    c = (a.shape[0] - 1) / 2
    best: tuple[float, np.ndarray] = (-2.0, np.array([1.0, 1.0, 0.0, 0.0]))
    grid = [(sx, sy) for sy in scales_y for sx in scales_x]
    zoomed = [_filled(_warp(b, (sx, sy, c - sx * c, c - sy * c), a.shape))[0] for sx, sy in grid]
    for (sx, sy), (dy, dx) in zip(grid, _phase_shifts(_spectrum(a), zoomed)):
        p = np.array([sx, sy, c - sx * c - sx * dx, c - sy * c - sy * dy])
        w = _warp(b, p, a.shape)
        box, share = _valid_box(w)
        if share < 0.6:
            continue
        s = _ncc(a[box].ravel(), w[box].ravel())
        if s > best[0]:
            best = (s, p)
    return best


def _refine(a: np.ndarray, b: np.ndarray, p0: np.ndarray, band: tuple[float, float], evals: int) -> tuple[float, np.ndarray]:
    a_band = _bandpass(a, *band)
    b_band = _band_with_margin(b, band)
    fun, x = minimize_powell(lambda p: _objective(a_band, b_band, p), p0, xtol=1e-2, ftol=1e-3, maxfev=evals)
    return -float(fun), x


def _block_median(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, float, int]:
    """Median and lower quartile of the detail correlation over _GRID x _GRID square blocks, and how
    many blocks counted. The blocks tile the frame's top-left square (all of a square view; of a
    keypoint frame, which is not square, the part its shorter side spans): the thresholds were set
    on that grid. (It took its side from the rows alone, so a portrait frame had blocks past its
    right edge, empty, counted as disagreeing.)"""
    k = min(a.shape[0], a.shape[1]) // _GRID
    vals = []
    for i in range(_GRID):
        for j in range(_GRID):
            sl = (slice(i * k, (i + 1) * k), slice(j * k, (j + 1) * k))
            m = valid[sl]
            if m.mean() < 0.8:
                continue
            x, y = a[sl][m], b[sl][m]
            if x.std() < 1.0 and y.std() < 1.0:
                continue  # flat background: says nothing either way
            vals.append(_ncc(x, y))
    if not vals:
        return 0.0, 0.0, 0
    v = np.array(vals)
    return float(np.median(v)), float(np.percentile(v, 25)), len(vals)


def unexplained_mismatch(
    a: np.ndarray, b: np.ndarray, valid: np.ndarray, window: int = 15, bands: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """Share of detail-bearing pixels whose local detail disagrees with comparable strength on both sides.
    `bands`: the two pictures' `_bandpass`, where the caller has them already."""
    import cv2

    clip_a = (a >= 250) | (a <= 4)
    clip_b = (b >= 250) | (b <= 4)
    one_clipped = _dilate(clip_a ^ clip_b, 4)
    ba, bb = bands if bands is not None else (_bandpass(a, *_BAND), _bandpass(b, *_BAND))

    def box(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.blur(x, (window, window), borderType=cv2.BORDER_REFLECT))

    ma, mb = box(ba), box(bb)
    va = np.maximum(box(ba * ba) - ma * ma, 0.0)
    vb = np.maximum(box(bb * bb) - mb * mb, 0.0)
    local = (box(ba * bb) - ma * mb) / np.sqrt(np.maximum(va * vb, 1e-6))
    energy = np.maximum(va, vb)
    if not valid.any():
        return 1.0
    detail = valid & ~one_clipped & (energy > 0.25 * float(np.percentile(energy[valid], 50)))
    if not detail.any():
        return 1.0
    balanced = np.abs(np.log((va + 1e-6) / (vb + 1e-6))) < np.log(2.0)
    return float(((local < 0.5) & balanced & detail).sum() / detail.sum())


def _fine_scores(ba: np.ndarray, fb: np.ndarray, p: np.ndarray) -> tuple[float, float, int, float, np.ndarray, np.ndarray]:
    w, valid = _filled(_warp(fb, p, ba.shape))
    valid = _erode(valid, 6)
    bb = _bandpass(w, *_BAND)
    median, q25, blocks = _block_median(ba, bb, valid)
    return median, q25, blocks, _ncc(ba[valid], bb[valid]), w, valid


def prescreen(a: Fingerprint, b: Fingerprint, mirrored: bool | None = None) -> tuple[float, bool, np.ndarray]:
    """Aligned detail correlation of the cached 64 px thumbnails: cheap, rejects most look-alikes."""
    if mirrored is None:
        _, mirrored = quick_score(a, b)
    ta = a.thumb_array().astype(np.float32)
    tb = b.thumb_array().astype(np.float32)
    if mirrored:
        tb = tb[:, ::-1].copy()
    _, p = _coarse_align(ta, tb)
    score, p = _refine(ta, tb, p, (0.7, 2.0), 80)
    return score, mirrored, p


def _rescale(p: np.ndarray, f: float) -> np.ndarray:
    """Alignment found at one size, expressed with both pictures at `f` times it (pixel centres kept)."""
    sx, sy, tx, ty = p
    return np.array([sx, sy, f * tx + (f - 1) / 2 - sx * (f - 1) / 2, f * ty + (f - 1) / 2 - sy * (f - 1) / 2])


def verify_pair(
    a: Fingerprint,
    b: Fingerprint,
    load_a: Callable[[], Image.Image],
    load_b: Callable[[], Image.Image],
    quick: tuple[float, bool] | None = None,
) -> Verdict:
    """Judge a hash-close pair: cheap checks on the fingerprints first, pixels only when they hold.

    `quick` is `quick_score(a, b)` when the caller already has it (from `quick_scores`).
    """
    thumb_ncc, mirrored = quick if quick is not None else quick_score(a, b)
    evidence: dict[str, float | bool | str] = {"thumb_ncc": round(thumb_ncc, 4), "mirrored": mirrored}
    if thumb_ncc < QUICK_MIN:
        return Verdict(False, round(thumb_ncc, 4), mirrored, evidence)
    pre, mirrored, p = prescreen(a, b, mirrored)
    other_way: tuple[float, bool, np.ndarray] | None = None  # the prescreen from the side not taken
    swapped = False
    if PRESCREEN_MIN - 0.05 <= pre < PRESCREEN_MIN:
        # alignment is not symmetric (one side may be a crop of the other): try the other way round
        other_way = prescreen(b, a, mirrored)
        if other_way[0] > pre:
            (pre, mirrored, p), other_way, swapped = other_way, (pre, mirrored, p), True
    evidence["thumb_detail"] = round(pre, 4)
    if pre < PRESCREEN_MIN:
        return Verdict(False, round(pre, 4), mirrored, evidence)
    ia, ib = load_a(), load_b()
    first, second = (ib, ia) if swapped else (ia, ib)
    verdict = verify_images(first, second, mirrored, p, evidence)
    if _close_call(verdict):
        # the alignment is searched from one side; judge from the other side too, from the
        # fingerprints' prescreen that way round (made above if it was in doubt)
        pre_o, mirrored_o, p_o = other_way if other_way is not None else prescreen(*((a, b) if swapped else (b, a)), mirrored)
        other = verify_images(second, first, mirrored_o, p_o, evidence | {"thumb_detail": round(pre_o, 4), "mirrored": mirrored_o})
        if other.duplicate or other.score > verdict.score:
            verdict = other
    return verdict


def _close_call(verdict: Verdict) -> bool:
    """A rejection near enough to the line that the other side's alignment might turn it: near the
    coarse gate, or at full detail with blocks near agreement and little unexplained detail."""
    if verdict.duplicate or verdict.score < COARSE_MIN - 0.05:
        return False
    unexplained = verdict.evidence.get("unexplained_mismatch")
    if unexplained is None:  # stopped at the coarse gate
        return True
    return verdict.score >= DETAIL_MIN - _REFINE_MARGIN and float(unexplained) <= _OTHER_SIDE_UNEXPLAINED


def verify_images(
    a: Image.Image,
    b: Image.Image,
    mirrored: bool = False,
    p_thumb: np.ndarray | None = None,
    evidence: dict[str, float | bool | str] | None = None,
) -> Verdict:
    """Judge two decoded pictures, given the orientation and the thumbnail alignment if known."""
    evidence = dict(evidence or {})
    if p_thumb is None:
        from ctcurate.leakage.hashing import fingerprint_image

        pre, mirrored, p_thumb = prescreen(fingerprint_image(a), fingerprint_image(b), mirrored if evidence else None)
        evidence |= {"thumb_detail": round(pre, 4), "mirrored": mirrored}
    ca, fa = views(a, (_COARSE, _FINE))
    cb, fb = views(b, (_COARSE, _FINE))
    if mirrored:
        cb, fb = cb[:, ::-1].copy(), fb[:, ::-1].copy()
    # the thumbnail alignment is a start; a finer scale grid around it escapes its local optimum
    p_start = _rescale(p_thumb, _COARSE / THUMB)
    sx0, sy0 = float(p_start[0]), float(p_start[1])
    _, p_grid = _coarse_align(ca, cb, tuple(sx0 * f for f in (0.97, 1.0, 1.03)), tuple(sy0 * f for f in (0.97, 1.0, 1.03)))
    a_band, b_band = _bandpass(ca, 1.0, 3.0), _band_with_margin(cb, (1.0, 3.0))
    start = min((p_start, p_grid), key=lambda q: _objective(a_band, b_band, q))
    coarse_detail, p = _refine(ca, cb, start, (1.0, 3.0), 100)
    evidence["coarse_detail"] = round(coarse_detail, 4)
    if coarse_detail < COARSE_MIN:
        return Verdict(False, round(coarse_detail, 4), mirrored, evidence)
    p_fine = _rescale(p, _FINE / _COARSE)
    ba = _bandpass(fa, *_BAND)
    median, q25, blocks, whole, w, valid = _fine_scores(ba, fb, p_fine)
    if DETAIL_MIN - _REFINE_MARGIN <= median < 0.99:  # close call: align at full detail before judging
        _, p_fine = _refine(fa, fb, p_fine, _BAND, 60)
        median, q25, blocks, whole, w, valid = _fine_scores(ba, fb, p_fine)
    fine = _ncc(_bandpass(fa, 0.7, 2.0)[valid], _bandpass(w, 0.7, 2.0)[valid])
    unexplained = unexplained_mismatch(fa, w, valid)
    evidence |= {
        "detail_block_median": round(median, 4),
        "detail_block_q25": round(q25, 4),
        "detail_whole": round(whole, 4),
        "fine_detail": round(fine, 4),
        "unexplained_mismatch": round(unexplained, 4),
        "blocks": blocks,
        "scale_x": round(float(p_fine[0]), 3),
        "scale_y": round(float(p_fine[1]), 3),
        "overlap": round(float(valid.mean()), 3),
    }
    dup = median >= DETAIL_MIN and whole >= GLOBAL_MIN and blocks >= _GRID and unexplained <= UNEXPLAINED_MAX
    return Verdict(dup, round(median, 4), mirrored, evidence)


# --- verification seeded by a keypoint transform (rotation, any scale, crop, mirror) -------------

ALIGNED_DETAIL_MIN = 0.93  # median block detail correlation, at the lower of the two resolutions
ALIGNED_UNEXPLAINED_MAX = 0.015
# A re-rendering at another window changes the texture inside a lesion only: the unexplained share
# rises (0.025-0.03 on COVID-CT's two renderings of one figure) while nearly every block still
# agrees. Neighbouring slices and other dates stay below a block median of 0.95 on the tuning set.
ALIGNED_STRONG_MEDIAN = 0.98
ALIGNED_STRONG_Q25 = 0.95
ALIGNED_STRONG_UNEXPLAINED_MAX = 0.04
ALIGNED_OVERLAP_MIN = 0.30  # share of the comparison frame both pictures cover
_FRAME = 288  # long side of the comparison frame
_BLURS = (0.0, 0.8, 1.5, 2.5)  # extra blur tried on either side: a soft copy against a sharp one


@dataclass(frozen=True)
class Seed:
    """A keypoint transform in the two pictures' trimmed-crop pixels: a's (mirrored) crop -> b's crop."""

    mirrored: bool
    matrix: tuple[float, ...]  # 2x3 row-major


def _gray_crop(im: Image.Image, box: tuple[int, int, int, int], mirrored: bool) -> np.ndarray:
    crop = np.asarray(to_gray(im).crop(box), dtype=np.float32)
    return np.ascontiguousarray(crop[:, ::-1]) if mirrored else crop


def _into_frame(low: np.ndarray, high: np.ndarray, m_low_to_high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`low` brought to `_FRAME` px on its long side, `high` resampled onto that grid (antialiased
    to it: the comparison is at the lower of the two resolutions), and the mask of frame pixels
    `high` covers."""
    import cv2

    h, w = low.shape
    f = _FRAME / max(h, w)
    size = (max(16, round(w * f)), max(16, round(h * f)))
    low_f = cv2.resize(low, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    # frame px -> low px -> high px
    to_low = np.array([[1 / f, 0.0, 0.5 / f - 0.5], [0.0, 1 / f, 0.5 / f - 0.5], [0.0, 0.0, 1.0]])
    m = np.vstack([m_low_to_high, [0.0, 0.0, 1.0]]) @ to_low
    s = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # high px per frame px
    if s > 2.0:  # reduce high first: blurring it at full size would cost more than the rest
        r = s / 2.0
        small = cv2.resize(high, (max(8, round(high.shape[1] / r)), max(8, round(high.shape[0] / r))), interpolation=cv2.INTER_AREA)
        k = np.diag([small.shape[1] / high.shape[1], small.shape[0] / high.shape[0], 1.0])
        k[0, 2], k[1, 2] = 0.5 * k[0, 0] - 0.5, 0.5 * k[1, 1] - 0.5
        high, m = small, k @ m
        s = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if s > 1.0:
        high = cv2.GaussianBlur(high, (0, 0), 0.45 * float(np.sqrt(s * s - 1.0)))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(high, m[:2], size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    cover = cv2.warpAffine(np.ones_like(high), m[:2], size, flags=flags, borderValue=0.0) > 0.99
    return low_f, warped, cover


def _ecc_fit(fixed: np.ndarray, moving: np.ndarray, cover: np.ndarray) -> np.ndarray | None:
    """The affine ECC warp of `moving` onto `fixed` inside `cover`, or None where it does not converge."""
    import cv2

    try:
        # a copy converges in a few steps; 1e-4 (not 1e-5) stops the ones that never will sooner
        # (95 keypoint pairs of COVID-CT and the tuning set: the same verdicts, the copies' scores
        # unchanged, a sixth less time)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-4)
        _, fit = cv2.findTransformECC(fixed, moving, np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE, criteria, cover.astype(np.uint8), 5)
    except cv2.error:  # did not converge
        return None
    return np.asarray(fit, dtype=np.float32)


def _ecc_refine(fixed: np.ndarray, moving: np.ndarray, cover: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`moving` nudged onto `fixed` by an affine ECC fit (contrast-invariant); the keypoint
    transform is good to a pixel or two, the detail comparison needs better. The fit can also run
    off to another optimum (a copy's fill corners pull it): it is kept only where the two
    pictures' detail agrees better under it than under the keypoint transform alone."""
    import cv2

    warp = _ecc_fit(fixed, moving, cover)
    if warp is None or not cover.any():
        return moving, cover
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    h, w = fixed.shape
    moved = cv2.warpAffine(moving, warp, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    moved_cover = cv2.warpAffine(cover.astype(np.float32), warp, (w, h), flags=flags, borderValue=0.0) > 0.99
    if moved_cover.mean() < 0.9 * cover.mean():
        return moving, cover  # moved a good part of the picture out of the frame: not a nudge
    band_fixed = _bandpass(fixed)
    before = _ncc(band_fixed[cover], _bandpass(moving)[cover])
    after = _ncc(band_fixed[moved_cover], _bandpass(moved)[moved_cover])
    return (moved, moved_cover) if after > before else (moving, cover)


def _match_tones(src: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`src`'s grey levels mapped onto `ref`'s by rank inside `valid`: gamma, contrast and window
    changes are monotonic, so they vanish; detail does not."""
    q = np.linspace(0, 100, 257)
    return np.asarray(np.interp(src, np.percentile(src[valid], q), np.percentile(ref[valid], q)), dtype=np.float32)


def _equal_blur(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """Blur the sharper side until the two agree best: compare at the lower effective resolution.
    Returns both pictures as compared, the blur (negative: b's), and their `_bandpass`."""
    import cv2

    ba = _bandpass(a)
    bb = _bandpass(b)
    best = (_ncc(ba[valid], bb[valid]), a, b, 0.0, ba, bb)
    for s in _BLURS[1:]:
        for side in (0, 1):
            x = cv2.GaussianBlur(a if side == 0 else b, (0, 0), s)
            bx = _bandpass(x)
            pa, pb, band_a, band_b = (x, b, bx, bb) if side == 0 else (a, x, ba, bx)
            score = _ncc(band_a[valid], band_b[valid])
            if score > best[0]:
                best = (score, pa, pb, s if side == 0 else -s, band_a, band_b)
    return best[1], best[2], best[3], best[4], best[5]


def aligned_frames(a: Image.Image, b: Image.Image, fa: Fingerprint, fb: Fingerprint, seed: Seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two pictures on one `_FRAME` grid at the lower of their resolutions: (low, high warped, valid)."""
    import cv2

    ca, cb = _gray_crop(a, fa.box, seed.mirrored), _gray_crop(b, fb.box, False)
    m = np.array(seed.matrix, dtype=np.float64).reshape(2, 3)
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if s >= 1.0:
        low, high, cover = _into_frame(ca, cb, m)
    else:
        low, high, cover = _into_frame(cb, ca, cv2.invertAffineTransform(m))
    high, cover = _ecc_refine(low, high, cover)
    valid = _erode(cover, 4)
    return low, high, valid


def verify_aligned(a: Image.Image, b: Image.Image, fa: Fingerprint, fb: Fingerprint, seed: Seed, evidence: dict[str, float | bool | str]) -> Verdict:
    """Judge a keypoint candidate: align by its transform, match tones and blur, compare detail."""
    low, high, valid = aligned_frames(a, b, fa, fb, seed)
    overlap = float(valid.mean())
    evidence = dict(evidence) | {"overlap": round(overlap, 3)}
    if overlap < ALIGNED_OVERLAP_MIN:
        return Verdict(False, 0.0, seed.mirrored, evidence)
    high = _match_tones(high, low, valid)
    low_b, high_b, blur, band_low, band_high = _equal_blur(low, high, valid)
    median, q25, blocks = _block_median(band_low, band_high, valid)
    whole = _ncc(band_low[valid], band_high[valid])
    unexplained = unexplained_mismatch(low_b, high_b, valid, bands=(band_low, band_high))
    evidence |= {
        "detail_block_median": round(median, 4),
        "detail_block_q25": round(q25, 4),
        "detail_whole": round(whole, 4),
        "unexplained_mismatch": round(unexplained, 4),
        "blocks": blocks,
        "blur": blur,
    }
    return Verdict(_aligned_duplicate(median, q25, whole, blocks, unexplained), round(median, 4), seed.mirrored, evidence)


def _aligned_duplicate(median: float, q25: float, whole: float, blocks: int, unexplained: float) -> bool:
    if median < ALIGNED_DETAIL_MIN or whole < GLOBAL_MIN or blocks < _GRID:
        return False
    strong = median >= ALIGNED_STRONG_MEDIAN and q25 >= ALIGNED_STRONG_Q25
    return unexplained <= (ALIGNED_STRONG_UNEXPLAINED_MAX if strong else ALIGNED_UNEXPLAINED_MAX)
