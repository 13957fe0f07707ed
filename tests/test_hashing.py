"""The normalized view: padding and uniform borders are trimmed, fingerprints are stable."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from ctcurate.core.layout import list_images
from ctcurate.leakage.hashing import THUMB, fingerprint_image, phashes, to_gray, trim_box, trimmed


def _scan(size: int = 200) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    body = ((x - size / 2) ** 2 / (0.42 * size) ** 2 + (y - size / 2) ** 2 / (0.32 * size) ** 2) < 1
    arr = np.where(body, 120 + rng.normal(0, 25, (size, size)), 0).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L")


def test_trim_cuts_padding_then_black_background():
    im = _scan()
    padded = ImageOps.expand(im, border=(30, 10, 50, 20), fill=255)
    box = trim_box(np.asarray(padded))
    inner = trim_box(np.asarray(im))
    # same body box, shifted by the padding
    assert abs(box[0] - (inner[0] + 30)) <= 2 and abs(box[1] - (inner[1] + 10)) <= 2
    assert abs(box[2] - (inner[2] + 30)) <= 2 and abs(box[3] - (inner[3] + 10)) <= 2
    assert inner[0] > 10 and inner[2] < 190  # the black air around the body is trimmed too


def test_small_marks_at_the_edge_do_not_hold_the_box_open():
    im = _scan()
    marked = im.copy()
    marked.paste(255, (2, 2, 8, 8))  # a letter-sized mark in the corner
    with_mark, without = trim_box(np.asarray(marked)), trim_box(np.asarray(im))
    assert max(abs(x - y) for x, y in zip(with_mark, without)) <= 2


def test_fingerprint_is_stable_and_mirror_aware():
    im = _scan()
    a, b = fingerprint_image(im), fingerprint_image(im.copy())
    assert a == b
    m = fingerprint_image(ImageOps.mirror(im))
    assert m.phash == a.phash_m and m.phash_m == a.phash
    assert len(a.thumb) == THUMB * THUMB


def test_transparency_is_flattened_onto_black():
    rgba = Image.new("RGBA", (50, 50), (255, 255, 255, 0))
    assert np.asarray(to_gray(rgba)).max() == 0


def _imagehash_phash(view: Image.Image) -> int:
    return int(np.packbits(imagehash.phash(view).hash.flatten().astype(np.uint8)).view(">u8")[0])


def test_phashes_are_imagehash_bit_for_bit(real_data: Path):
    """The batched pHash of the view and of its mirror equals two imagehash.phash calls, on noise
    and on every 10th real image (on all 746 when it was written)."""
    rng = np.random.default_rng(1)
    views = [Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L") for _ in range(20)]
    for p in [p for files in list_images(real_data).values() for p in files][::10]:
        _, cropped = trimmed(to_gray(Image.open(p)))
        views.append(cropped.resize((64, 64), Image.Resampling.LANCZOS, reducing_gap=2.0))
    for view in views:
        assert phashes(view) == (_imagehash_phash(view), _imagehash_phash(ImageOps.mirror(view)))
