"""A small dataset built from real CT images, with one case of every leakage kind."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from ctcurate.core.layout import IMAGES_DIR

from leakage_helpers import TRANSFORMS, real_image

# name in the small dataset -> (real image it is made from, transform or None)
SOURCES = {
    "CT_COVID/a.png": ("CT_COVID/2020.01.24.919183-p27-132.png", None),
    "CT_COVID/a_copy.png": ("CT_COVID/2020.01.24.919183-p27-132.png", "resize-half"),
    "CT_COVID/b.png": ("CT_COVID/kjr-21-e24-p5-29.png", None),
    "CT_COVID/b_copy.jpg": ("CT_COVID/kjr-21-e24-p5-29.png", "jpeg-q35"),
    "CT_COVID/c.png": ("CT_NonCOVID/1330.png", None),
    "CT_NonCOVID/c_copy.png": ("CT_NonCOVID/1330.png", "annotated"),
    "CT_COVID/d.png": ("CT_NonCOVID/25.png", None),
    "CT_COVID/d_copy.png": ("CT_NonCOVID/25.png", "mirrored"),
    "CT_COVID/e.png": ("CT_NonCOVID/1099.png", None),
    "CT_COVID/f.png": ("CT_COVID/2020.03.26.20041426-p11-120.png", None),
    "CT_COVID/2020.02.25.20021568-p23-108%0.png": ("CT_NonCOVID/2140.png", None),
    "CT_COVID/2020.02.25.20021568-p23-108%1.png": ("CT_COVID/bmj.m606.full-p4-22%0.png", None),
    "CT_NonCOVID/n1.png": ("CT_NonCOVID/6%0.jpg", None),
    "CT_NonCOVID/n2.png": ("CT_NonCOVID/176.png", None),
}
SPLITS = {
    "CT_COVID": {
        "train": ["a.png", "a_copy.png", "b.png", "c.png", "e.png", "2020.02.25.20021568-p23-108%0.png"],
        "val": ["b_copy.jpg", "d.png"],
        "test": ["d_copy.png", "f.png", "2020.02.25.20021568-p23-108%1.png"],
    },
    "CT_NonCOVID": {"train": ["n1.png", "broken.png"], "val": ["n2.png"], "test": ["c_copy.png"]},
}
EXPECTED_PAIRS = {
    ("CT_COVID/a.png", "CT_COVID/a_copy.png"): ["duplicate"],
    ("CT_COVID/b.png", "CT_COVID/b_copy.jpg"): ["leak-train-val"],
    ("CT_COVID/c.png", "CT_NonCOVID/c_copy.png"): ["leak-train-test", "label-conflict"],
    ("CT_COVID/d.png", "CT_COVID/d_copy.png"): ["leak-val-test"],
}


def build(root: Path, real_root: Path, broken: bool = True) -> Path:
    """Write the images, split lists and metadata sheets under `root`; returns the metadata dir."""
    for rel, (src, transform) in SOURCES.items():
        im = real_image(real_root, src)
        if transform:
            im = TRANSFORMS[transform](im)
        target = root / IMAGES_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        im.save(target, "JPEG" if rel.endswith(".jpg") else "PNG")
    if broken:
        (root / IMAGES_DIR / "CT_NonCOVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    meta = root / "metadata"
    for class_dir, splits in SPLITS.items():
        label = class_dir.removeprefix("CT_")
        for split, names in splits.items():
            path = meta / "Data-split" / label / f"{split}{class_dir}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n}\n" for n in names if broken or n != "broken.png"))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["File name", "Patient ID", "DOI"])
    ws.append(["e.png", "P9", "10.1000/alpha"])
    ws.append(["f", "P9", " 10.1000/alpha "])  # no extension and stray spaces, as upstream
    ws.append(["2020.02.25.20021568-p23-108%0.png", "P20", "10.1101/2020.02.25.20021568"])
    ws.append(["2020.02.25.20021568-p23-108%1.png", "P21", "10.1101/2020.02.25.20021568 "])
    wb.save(meta / "COVID-CT-MetaInfo.xlsx")
    (meta / "NonCOVID-CT-MetaInfo.csv").write_text(",image name,patient id\n0,n1.png,crawled_1\n1,n2.png,crawled_2\n")
    return meta
