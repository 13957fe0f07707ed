"""Make a compact copy of a COVID-CT image folder for a machine that takes at most 64 MiB (the GPU check).

    python bench/pack_data.py SRC_ROOT DST_ROOT        # both hold (or will hold) Images-processed/

Same layout and file names. An image whose shorter side is at most 256 px is copied byte for byte;
a larger one is stored already resized to the protocol's train size (shorter side 256, bilinear, as
torchvision's Resize(256)) as lossless PNG data (one grey channel when R=G=B), under its original
name. Training crops are then exactly as from the original; evaluation of those larger images
resizes 256 -> 224 instead of original -> 224, a small double-resampling difference to state with
the figures. The real data (97 MB) packs to about 42 MiB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from ctcurate.benchmark.data import _resize_short, train_resize
from ctcurate.core.images import open_image
from ctcurate.core.layout import IMAGE_SUFFIXES, IMAGES_DIR

LIMIT_MIB = 64


def main(src: Path, dst: Path) -> int:
    short = train_resize(224)
    total = resized = 0
    for path in sorted((src / IMAGES_DIR).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        im = open_image(path)
        if min(im.size) <= short:
            shutil.copyfile(path, target)
        else:
            rgb = _resize_short(im.convert("RGB"), short)
            a = np.asarray(rgb)
            if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
                rgb = rgb.convert("L")
            rgb.save(target, format="PNG")
            resized += 1
        total += target.stat().st_size
    print(f"{dst}: {total / 2**20:.1f} MiB ({resized} images stored at shorter side {short}); limit {LIMIT_MIB} MiB")
    return 0 if total < LIMIT_MIB * 2**20 else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
