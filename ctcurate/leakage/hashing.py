"""Perceptual fingerprints of one picture: pure functions from pixels to small values.

Owns the *normalized view* (grayscale, alpha flattened, uniform borders and padding trimmed) and
what is computed on it: pHash (imagehash's) of the view and of its mirror image, a small aligned
thumbnail for the finer verification (`verify.py`), the keypoints of the view
(`keypoints.py`, computed here so that one decode serves both), and the file's content hash.
Imports only `keypoints`; no cache, no search, no I/O besides reading the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from ctcurate.leakage.keypoints import Keypoints, keypoints_of

# Bump when anything below changes what a fingerprint holds: cached fingerprints of another
# version are recomputed.
HASH_VERSION = "10"

THUMB = 64  # side of the verification thumbnail (the trimmed view, stretched to a square)
_VIEW = 64  # the hashes are computed on the trimmed view brought to this square first
_TRIM_TOL = 24  # grey levels a pixel may differ from the border colour and still be border
_TRIM_MASS = 0.004  # share of the foreground that may lie outside the kept box (small text, marks)
_TRIM_ROUNDS = 3  # padding around a black background: trim the padding, then the background
_FRAME_NOISE = 0.2  # a border is uniform when at most this share of its pixels stand out


@dataclass(frozen=True)
class Fingerprint:
    """What search and verification need of one image; small, so it caches and pickles cheaply."""

    width: int
    height: int
    box: tuple[int, int, int, int]  # the kept box of the trimmed view, in source pixels
    phash: int
    phash_m: int  # the pHash of the mirrored view
    thumb: bytes  # THUMB*THUMB uint8 grayscale of the trimmed view

    def thumb_array(self) -> np.ndarray:
        return np.frombuffer(self.thumb, dtype=np.uint8).reshape(THUMB, THUMB)


def to_gray(im: Image.Image) -> Image.Image:
    """Grayscale with transparency flattened onto black (CT background), whatever the source mode."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im if im.mode in ("RGBA", "LA") else im.convert("RGBA")
        alpha = rgba.getchannel("A")
        gray = rgba.convert("L")
        if alpha.getextrema() == (255, 255):
            return gray  # opaque: nothing to flatten
        # over black, each grey level is scaled by its opacity
        return ImageChops.multiply(gray, alpha)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L")
    return im.convert("L")


def _mass_bounds(profile: np.ndarray, mass: float) -> tuple[int, int]:
    """First and last index (exclusive end) holding all but `mass` of the profile at each end."""
    total = float(profile.sum())
    if total <= 0:
        return 0, len(profile)
    cum = np.cumsum(profile, dtype=np.float64)
    cut = total * mass
    lo = int(np.searchsorted(cum, cut, side="right"))
    hi = int(np.searchsorted(cum, total - cut, side="left")) + 1
    return min(lo, len(profile) - 1), max(hi, min(lo, len(profile) - 1) + 1)


def trim_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) left once uniform borders and padding are cut away.

    The border colour is the median of the outermost frame; pixels within `_TRIM_TOL` of it are
    background, and a frame is only cut while it is uniform (so a picture that fills its frame is
    left whole). A few foreground pixels near the edge (a letter, a scale mark) do not hold the box
    open: each side keeps all but `_TRIM_MASS` of the foreground. Repeats so that white padding
    around a black background is cut, then the background itself.
    """
    h, w = gray.shape
    left, top, right, bottom = 0, 0, w, h
    prev_bg: int | None = None
    for _ in range(_TRIM_ROUNDS):
        sub = gray[top:bottom, left:right]
        sh, sw = sub.shape
        if sh < 8 or sw < 8:
            break
        frame = np.concatenate([sub[0], sub[-1], sub[:, 0], sub[:, -1]])
        counts = np.bincount(frame, minlength=256)
        bg = int(np.searchsorted(np.cumsum(counts), (len(frame) + 1) // 2))  # median grey of the frame
        if prev_bg is not None and abs(bg - prev_bg) <= _TRIM_TOL:
            break  # same border colour as the last cut: it was cut already
        prev_bg = bg
        far = np.abs(np.arange(256) - bg) > _TRIM_TOL
        # only a side whose edge is uniform background is cut; an edge through the picture stays
        uniform = [far[edge].mean() <= _FRAME_NOISE for edge in (sub[:, 0], sub[0], sub[:, -1], sub[-1])]
        if not any(uniform):
            break
        fg = far[sub]
        if not fg.any():
            break
        x0, x1 = _mass_bounds(fg.sum(axis=0), _TRIM_MASS)
        y0, y1 = _mass_bounds(fg.sum(axis=1), _TRIM_MASS)
        x0, y0 = (x0 if uniform[0] else 0), (y0 if uniform[1] else 0)
        x1, y1 = (x1 if uniform[2] else sw), (y1 if uniform[3] else sh)
        if (x1 - x0) < max(8, sw // 8) or (y1 - y0) < max(8, sh // 8):
            break  # would keep a sliver: the "border" is the picture
        if (x0, y0, x1, y1) == (0, 0, sw, sh):
            break
        # the pixel on each cut is often a blend of border and picture (resampling, antialiasing):
        # drop it, or the next round would see a non-uniform edge
        x0, y0 = x0 + (x0 > 0), y0 + (y0 > 0)
        x1, y1 = x1 - (x1 < sw), y1 - (y1 < sh)
        left, top, right, bottom = left + x0, top + y0, left + x1, top + y1
    return left, top, right, bottom


def trimmed(gray: Image.Image) -> tuple[tuple[int, int, int, int], Image.Image]:
    """The trim box in `gray`'s pixels, and the trimmed picture box-reduced to 128-255 px.

    `trim_box` runs on a copy box-reduced to 128-255 px (fast, and all that the 64 px view needs
    anyway); the box is mapped back with every cut side rounded inwards, since a reduced pixel on
    the cut mixes border and picture.
    """
    k = max(1, min(gray.width, gray.height) // 128)
    if k == 1:
        box = trim_box(np.asarray(gray))
        return box, gray.crop(box)
    small = gray.reduce(k)
    sw, sh = small.size
    l, t, r, b = trim_box(np.asarray(small))
    inner = (l + (l > 0), t + (t > 0), r - (r < sw), b - (b < sh))
    box = (
        inner[0] * k if l > 0 else 0,
        inner[1] * k if t > 0 else 0,
        inner[2] * k if r < sw else gray.width,
        inner[3] * k if b < sh else gray.height,
    )
    return box, small.crop(inner)


_PHASH_SIDE = 32  # imagehash.phash's grid: hash_size 8 x highfreq_factor 4
_DCT8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(_PHASH_SIDE)[None, :] + 1) / (2 * _PHASH_SIDE))  # its low DCT-II rows
_MIRROR_SIGNS = np.where(np.arange(8) % 2, -1.0, 1.0)  # a mirrored row's DCT-II: odd frequencies change sign


def _median_bits(low: np.ndarray) -> tuple[int, ...]:
    """Each 8x8 low band's bits against its own median, packed as imagehash packs them."""
    flat = low.reshape(-1, 64)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return tuple(int(v) for v in np.packbits(bits.astype(np.uint8), axis=1).view(">u8")[:, 0])


def phashes(view: Image.Image) -> tuple[int, int]:
    """imagehash.phash of the view and of its mirror image, bit for bit (the same 32 px LANCZOS grid,
    the same low 8x8 DCT-II band against its median), from one resize and one small matrix product:
    the mirror's band is the view's with its odd horizontal frequencies negated. Two imagehash
    calls (scipy's DCT of the whole grid, a mirror and a second resize) cost 12x more per image."""
    grid = np.asarray(view.resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT8 @ grid @ _DCT8.T
    direct, mirrored = _median_bits(np.stack([low, low * _MIRROR_SIGNS[None, :]]))
    return direct, mirrored


def _fingerprint_gray(gray: Image.Image, size: tuple[int, int]) -> tuple[Fingerprint, tuple[int, int, int, int]]:
    box, cropped = trimmed(gray)
    view = cropped.resize((_VIEW, _VIEW), Image.Resampling.LANCZOS, reducing_gap=2.0)
    thumb = view if THUMB == _VIEW else cropped.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    direct, mirrored = phashes(view)
    fp = Fingerprint(
        width=size[0],
        height=size[1],
        box=box,
        phash=direct,
        phash_m=mirrored,
        thumb=np.asarray(thumb, dtype=np.uint8).tobytes(),
    )
    return fp, box


def fingerprint_image(im: Image.Image) -> Fingerprint:
    """The fingerprint of a decoded picture (pure: same pixels, same fingerprint)."""
    return _fingerprint_gray(to_gray(im), im.size)[0]


def describe_image(im: Image.Image) -> tuple[Fingerprint, Keypoints]:
    """Fingerprint and keypoints of a decoded picture, converting and trimming it once."""
    gray = to_gray(im)
    fp, box = _fingerprint_gray(gray, im.size)
    return fp, keypoints_of(gray.crop(box))


def file_sha256(path: Path) -> str:
    """Content hash of the file's bytes: the cache key and the byte-duplicate test."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
