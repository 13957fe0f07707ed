"""Perceptual fingerprints of one picture: pure functions from pixels to small values.

Owns the *normalized view* (grayscale, alpha flattened, uniform borders and padding trimmed) and
what is computed on it: pHash, dHash and wHash (imagehash) of the view and of its mirror image, a
small aligned thumbnail for the finer verification (`verify.py`), and the pixel digest that tells
exact pixel duplicates. Imports only `images`; no cache, no search, no I/O besides opening the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from .images import open_image

# Bump when anything below changes what a fingerprint holds: cached fingerprints of another
# version are recomputed.
HASH_VERSION = "1"

THUMB = 64  # side of the verification thumbnail (the trimmed view, stretched to a square)
_VIEW = 64  # the hashes are computed on the trimmed view brought to this square first
_TRIM_TOL = 24  # grey levels a pixel may differ from the border colour and still be border
_TRIM_MASS = 0.002  # share of the foreground that may lie outside the kept box (small text, marks)
_TRIM_ROUNDS = 3  # padding around a black background: trim the padding, then the background

HASH_KINDS = ("phash", "dhash", "whash")


@dataclass(frozen=True)
class Fingerprint:
    """What search and verification need of one image; small, so it caches and pickles cheaply."""

    width: int
    height: int
    box: tuple[int, int, int, int]  # the kept box of the trimmed view, in source pixels
    pixel_sha256: str  # of the grayscale-free decoded pixels (RGB(A) as decoded): exact pixel copies
    phash: int
    dhash: int
    whash: int
    phash_m: int  # the same three hashes of the mirrored view
    dhash_m: int
    whash_m: int
    thumb: bytes  # THUMB*THUMB uint8 grayscale of the trimmed view

    def thumb_array(self) -> np.ndarray:
        return np.frombuffer(self.thumb, dtype=np.uint8).reshape(THUMB, THUMB)

    def hash(self, kind: str, mirrored: bool = False) -> int:
        return int(getattr(self, f"{kind}_m" if mirrored else kind))


def to_gray(im: Image.Image) -> Image.Image:
    """Grayscale with transparency flattened onto black (CT background), whatever the source mode."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
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
    background. A few foreground pixels near the edge (a letter, a scale mark) do not hold the box
    open: each side keeps all but `_TRIM_MASS` of the foreground. Repeats so that white padding
    around a black background is cut, then the background itself.
    """
    h, w = gray.shape
    left, top, right, bottom = 0, 0, w, h
    for _ in range(_TRIM_ROUNDS):
        sub = gray[top:bottom, left:right]
        sh, sw = sub.shape
        if sh < 8 or sw < 8:
            break
        frame = np.concatenate([sub[0], sub[-1], sub[:, 0], sub[:, -1]])
        bg = int(np.median(frame))
        fg = np.abs(sub.astype(np.int16) - bg) > _TRIM_TOL
        if not fg.any():
            break
        x0, x1 = _mass_bounds(fg.sum(axis=0), _TRIM_MASS)
        y0, y1 = _mass_bounds(fg.sum(axis=1), _TRIM_MASS)
        if (x1 - x0) < max(8, sw // 8) or (y1 - y0) < max(8, sh // 8):
            break  # would keep a sliver: the "border" is the picture
        if (x0, y0, x1, y1) == (0, 0, sw, sh):
            break
        left, top, right, bottom = left + x0, top + y0, left + x1, top + y1
    return left, top, right, bottom


def _hashes(view: Image.Image) -> tuple[int, int, int]:
    ph = imagehash.phash(view)
    dh = imagehash.dhash(view)
    wh = imagehash.whash(view, image_scale=_VIEW)
    return tuple(_as_int(h) for h in (ph, dh, wh))  # type: ignore[return-value]


def _as_int(h: imagehash.ImageHash) -> int:
    bits = h.hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def fingerprint_image(im: Image.Image) -> Fingerprint:
    """The fingerprint of a decoded picture (pure: same pixels, same fingerprint)."""
    raw = im.tobytes()
    pixel_sha = hashlib.sha256(f"{im.mode}:{im.size}:".encode() + raw).hexdigest()
    gray = to_gray(im)
    arr = np.asarray(gray)
    box = trim_box(arr)
    cropped = gray.crop(box)
    view = cropped.resize((_VIEW, _VIEW), Image.Resampling.LANCZOS, reducing_gap=2.0)
    mirror = ImageOps.mirror(view)
    direct = _hashes(view)
    mirrored = _hashes(mirror)
    thumb = view if THUMB == _VIEW else cropped.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    return Fingerprint(
        width=im.width,
        height=im.height,
        box=box,
        pixel_sha256=pixel_sha,
        phash=direct[0],
        dhash=direct[1],
        whash=direct[2],
        phash_m=mirrored[0],
        dhash_m=mirrored[1],
        whash_m=mirrored[2],
        thumb=np.asarray(thumb, dtype=np.uint8).tobytes(),
    )


def fingerprint_file(path: Path) -> Fingerprint:
    """Decode `path` fully (raises `images.UnreadableImage`) and fingerprint it."""
    return fingerprint_image(open_image(path))


def file_sha256(path: Path) -> str:
    """Content hash of the file's bytes: the cache key and the byte-duplicate test."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
