"""Builders shared by the add-contribution tests: a small synthetic dataset, contributions, tree hashes."""

from __future__ import annotations

import csv
import hashlib
import random
import zipfile
from pathlib import Path

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from PIL import Image

SHEET_HEADER = ["File name", "Patient ID", "Age", "Gender", "Location", "Medical history", "Time",
                "Severity", "Other diseases", "DOI", "Captions"]
CONTRIB_HEADER = ["File name", "Label", "Patient ID", "DOI", "Captions", "Age", "Gender"]


def noise_png(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A small picture unlike any other seed's (random blocks), so no two count as duplicates."""
    rng = random.Random(seed)
    im = Image.new("L", size)
    block = 8
    for y in range(0, size[1], block):
        for x in range(0, size[0], block):
            im.paste(rng.randrange(256), (x, y, x + block, y + block))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def make_synthetic_dataset(root: Path) -> Path:
    """A dataset laid out like COVID-CT: 4 COVID + 4 NonCOVID images, sheets, split lists."""
    covid = [f"2020.02.10.2002158{i}-p6-5{i}%0.png" for i in range(2)] + ["paper-a-p1-1%0.png", "paper-a-p1-1%1.png"]
    noncovid = ["0.jpg", "1%0.jpg", "1%1.jpg", "2.png"]
    for i, name in enumerate(covid):
        noise_png(root / "Images-processed" / "CT_COVID" / name, 1000 + i)
    for i, name in enumerate(noncovid):
        p = root / "Images-processed" / "CT_NonCOVID" / name
        noise_png(p.with_suffix(".png"), 2000 + i)
        if p.suffix == ".jpg":
            Image.open(p.with_suffix(".png")).convert("RGB").save(p, quality=90)
            p.with_suffix(".png").unlink()
    meta = root / "metadata"
    meta.mkdir(parents=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "positive_captions"
    ws.append(SHEET_HEADER)
    for c in ws[1]:
        c.font = Font(bold=True)
        c.fill = PatternFill("solid", fgColor="FFDDEEFF")
    dois = ["10.1101/2020.02.10.20021580", "10.1101/2020.02.10.20021581", " https://doi.org/10.1016/J.Test.2020.1", None]
    for i, name in enumerate(covid):
        ws.append([name, f"Patient {1 + i // 2}", 40 + i, "M", "Wuhan, China", None, None, None, None, dois[i], f"caption {i}"])
        ws.cell(i + 2, 11).alignment = Alignment(wrap_text=True)
    ws.append([None] * 10 + ["footnote row"])
    ws.column_dimensions["A"].width = 35
    ws.column_dimensions["K"].width = 80
    other = wb.create_sheet("notes")
    other["A1"] = "kept as is"
    other["B2"] = 3.5
    wb.save(meta / "COVID-CT-MetaInfo.xlsx")
    with open(meta / "NonCOVID-CT-MetaInfo.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["", "image name", "patient id"])
        for i, name in enumerate(noncovid):
            w.writerow([i, name, f"crawled_patient_{i}"])
    splits = {("COVID", "CT_COVID"): {"train": covid[:2], "val": covid[2:], "test": []},
              ("NonCOVID", "CT_NonCOVID"): {"train": noncovid[:2], "val": noncovid[2:3], "test": noncovid[3:]}}
    for (label, class_dir), per in splits.items():
        for split, names in per.items():
            p = meta / "Data-split" / label / f"{split}{class_dir}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(n + "\n" for n in names))
    return root


def write_contribution_sheet(path: Path, rows: list[dict[str, object]], header: list[str] | None = None) -> Path:
    header = header or CONTRIB_HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in rows:
                w.writerow(["" if r.get(h) is None else r.get(h) for h in header])
    else:
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(header)
        for r in rows:
            ws.append([r.get(h) for h in header])
        wb.save(path)
    return path


def xlsx_content_hash(path: Path) -> str:
    """Hash of a workbook's parts, leaving out what every save changes (zip timestamps, docProps/core.xml)."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name != "docProps/core.xml":
                h.update(name.encode() + b"\0" + zf.read(name))
    return h.hexdigest()


def tree_hashes(root: Path, ignore: tuple[str, ...] = ("cache.sqlite",)) -> dict[str, str]:
    """Relative path -> content hash of every file under `root` (cache files left out: not data).

    Workbooks are hashed by their parts (`xlsx_content_hash`) since each save stamps the time.
    """
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(p.name.startswith(i) for i in ignore):
            digest = xlsx_content_hash(p) if p.suffix == ".xlsx" else hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.relative_to(root).as_posix()] = digest
    return out


def hold_out(root: Path, covid: list[str], noncovid: list[str], contrib: Path,
             doi_for=lambda name, sheet_doi: sheet_doi) -> list[dict[str, object]]:
    """Take real images out of the dataset copy at `root` (files, sheet rows, split entries) and put
    them, with rows rebuilt from their metadata, in the contribution folder `contrib`.

    `doi_for(file name, DOI on its sheet row)` gives the DOI to contribute with. Returns the rows.
    """
    from ctcurate.doi import normalize as doi_lib

    meta, img = root / "metadata", root / "Images-processed"
    contrib.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    wb = openpyxl.load_workbook(meta / "COVID-CT-MetaInfo.xlsx")
    ws = wb.worksheets[0]
    header = [c.value for c in ws[1]]
    wanted = set(covid)
    for r in range(ws.max_row, 1, -1):
        values = dict(zip(header, (c.value for c in ws[r])))
        if values.get("File name") in wanted:
            doi = values.get("DOI") or (p.doi if (p := doi_lib.preprint_from_filename(values["File name"])) else None)
            rows.append({**{k: v for k, v in values.items() if k in CONTRIB_HEADER or k in SHEET_HEADER},
                         "Label": "COVID", "DOI": doi_for(values["File name"], doi), "Patient ID": f"their {values['Patient ID']}"})
            ws.delete_rows(r)
    wb.save(meta / "COVID-CT-MetaInfo.xlsx")
    with open(meta / "NonCOVID-CT-MetaInfo.csv", newline="") as fh:
        records = list(csv.reader(fh))
    keep = [records[0]]
    for rec in records[1:]:
        if rec[1] in noncovid:
            rows.append({"File name": rec[1], "Label": "NonCOVID", "Patient ID": f"their {rec[2]}",
                         "DOI": doi_for(rec[1], None), "Captions": "CT image"})
        else:
            keep.append(rec)
    with open(meta / "NonCOVID-CT-MetaInfo.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(keep)
    for split_file in (meta / "Data-split").rglob("*.txt"):
        lines = split_file.read_text().splitlines()
        split_file.write_text("".join(n + "\n" for n in lines if n.strip() not in wanted | set(noncovid)))
    for name in covid:
        (img / "CT_COVID" / name).rename(contrib / name)
    for name in noncovid:
        (img / "CT_NonCOVID" / name).rename(contrib / name)
    rows.sort(key=lambda r: str(r["File name"]))
    write_contribution_sheet(contrib / "contribution.xlsx", rows, header=[*CONTRIB_HEADER, "Location", "Medical history",
                                                                         "Time", "Severity", "Other diseases"])
    return rows
