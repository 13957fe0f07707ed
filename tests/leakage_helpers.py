"""Transformed copies of real CT images, shared by the check-leakage tests."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from ctcurate.core.layout import IMAGES_DIR


def real_image(root: Path, rel: str) -> Image.Image:
    with Image.open(root / IMAGES_DIR / rel) as im:
        return im.convert("RGB")


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def _annotate(im: Image.Image) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    w, h = out.size
    d.line((w * 0.25, h * 0.30, w * 0.40, h * 0.45), fill=(255, 255, 0), width=max(2, w // 120))
    d.polygon([(w * 0.40, h * 0.45), (w * 0.36, h * 0.45), (w * 0.40, h * 0.41)], fill=(255, 255, 0))
    font = ImageFont.load_default(size=max(12, w // 28))
    d.text((w * 0.05, h * 0.04), "Fig. 2B  patient 7", fill=(255, 255, 255), font=font)
    d.text((w * 0.88, h * 0.85), "R", fill=(255, 255, 255), font=font)
    d.ellipse((w * 0.55, h * 0.55, w * 0.68, h * 0.68), outline=(255, 0, 0), width=max(2, w // 150))
    return out


TRANSFORMS = {
    "resize-half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "upscale": lambda im: im.resize((int(im.width * 1.6), int(im.height * 1.6)), Image.Resampling.BICUBIC),
    # cut into the picture itself (not only its border): 4% left, 3% top, 2% right, 3% bottom
    "crop": lambda im: im.crop((int(im.width * 0.04), int(im.height * 0.03), im.width - int(im.width * 0.02), im.height - int(im.height * 0.03))),
    "crop-border": lambda im: ImageOps.expand(im, border=20, fill=(0, 0, 0)).crop((12, 8, im.width + 30, im.height + 34)),
    "pad-white": lambda im: ImageOps.expand(im, border=(40, 25, 40, 25), fill=(255, 255, 255)),
    "pad-black": lambda im: ImageOps.expand(im, border=30, fill=(0, 0, 0)),
    "jpeg-q35": lambda im: _jpeg(im, 35),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "contrast": lambda im: ImageEnhance.Contrast(im).enhance(0.8),
    "annotated": _annotate,
    "mirrored": ImageOps.mirror,
    "mirrored-resized-jpeg": lambda im: _jpeg(ImageOps.mirror(im).resize((im.width * 3 // 4, im.height * 3 // 4)), 60),
}


def _cut(im: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * left), int(h * top), w - int(w * right), h - int(h * bottom)))


# Copies cut deeper into the picture than `TRANSFORMS["crop"]`: the whole-view hashes of these are
# far from the original's; the keypoint stage finds them.
CROPS = {
    "crop10": lambda im: _cut(im, 0.10, 0.10, 0.10, 0.10),
    "crop15": lambda im: _cut(im, 0.15, 0.15, 0.15, 0.15),
    "strip15-bottom": lambda im: _cut(im, 0.0, 0.0, 0.0, 0.15),
    "strip15-left": lambda im: _cut(im, 0.15, 0.0, 0.0, 0.0),
    "crop12-mirrored": lambda im: ImageOps.mirror(_cut(im, 0.12, 0.12, 0.12, 0.12)),
}
