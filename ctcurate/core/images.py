"""Reading images safely: full decode, format sniffing, decompression-bomb limits.

Owns the one way ctcurate opens a picture, so that a broken file is always a reported failure
(`UnreadableImage`) and never a `None` that silently drops out of a check.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

# Largest picture we accept (pixels); COVID-CT images are well under 2 Mpx.
MAX_PIXELS = 64_000_000

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
_SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}


class UnreadableImage(Exception):
    """The file is not a picture we can decode completely; `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def sniff_format(head: bytes) -> str | None:
    """The container format from the first bytes (`png`, `jpeg`, ...), or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def format_of_suffix(path: Path) -> str | None:
    return _SUFFIX_FORMAT.get(path.suffix.lower())


def open_image(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode the whole file (not only its header) or raise `UnreadableImage`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise UnreadableImage(path, f"{im.width}x{im.height} exceeds {max_pixels} pixels")
                im.load()
                return im.copy() if im.fp is not None else im
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(path, f"cannot decode: {exc}") from exc
