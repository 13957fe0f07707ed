"""Transformed copies of real CT images with ground truth: the instrument that measures leakage recall.

Owns a deterministic, seeded generator of a dataset laid out like COVID-CT (Images-processed/<class>/,
Data-split/<label>/<split><class>.txt) holding real images (read-only from $CTCURATE_DATA), copies of
some of them re-rendered the way papers re-render figures (rotation, crop, scale, blur/sharpen,
gamma/contrast/window, JPEG, burnt-in letters and arrows, mirror, and combinations of 2-4 of them),
and distractors: other real images of the same patient or source figure (neighbouring slices, other
dates) that are not the same picture. It writes `ground_truth.json` (which pairs are one picture and
by which transform) and scores a list of reported pairs against it.

Independent of the detection pipeline on purpose: imports nothing from `ctcurate.leakage`.
Seeds of different parity draw from disjoint groups of patients/figures (seed 1 = tuning set,
seed 2 = held-out), so a held-out set shares no patient or figure with the tuning set.
Real true duplicates (tests/data/real_true_pairs.json) are never both put in one generated set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

HERE = Path(__file__).resolve().parent
REAL_TRUE_PAIRS = HERE / "data" / "real_true_pairs.json"
IMAGES_DIR = "Images-processed"
SPLITS_DIR = "Data-split"
TRUTH_FILE = "ground_truth.json"
CLASS_LABELS = {"CT_COVID": "COVID", "CT_NonCOVID": "NonCOVID"}

# Applied in this order when combined: geometry first, then filters and tone, then burnt-in marks,
# then the JPEG encoding of the file itself.
KINDS = ("crop", "rotate", "mirror", "scale", "filter", "tone", "annotate", "jpeg")
COMBOS = ("combo2", "combo3", "combo4")
CATEGORIES = KINDS + COMBOS
# Copies per category: "small" runs in seconds (tests), "bench" is the measuring set.
SIZES = {"small": 1, "medium": 4, "bench": 12}
MIN_SIDE = 48

Params = dict[str, Any]
Transform = Callable[[Image.Image, random.Random], tuple[Image.Image, Params]]


# --- transforms (pure: image + rng -> image + the parameters drawn) ------------------------------


def _crop(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """Keep 50-95 % of the area, at a random aspect and offset."""
    area = rng.uniform(0.50, 0.95)
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    fw = min(1.0, math.sqrt(area * aspect))
    fh = min(1.0, area / fw)
    fw = area / fh
    w, h = im.size
    cw, ch = max(8, round(w * fw)), max(8, round(h * fh))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch)), {"area": round(cw * ch / (w * h), 3), "box": [x, y, x + cw, y + ch]}


def _rotate(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """1-15 degrees either way; the canvas grows (filled black or white) or keeps its size."""
    angle = rng.uniform(1.0, 15.0) * rng.choice((-1, 1))
    fill = rng.choice(((0, 0, 0), (255, 255, 255)))
    expand = rng.random() < 0.5
    out = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=expand, fillcolor=fill)
    return out, {"angle": round(angle, 2), "expand": expand, "fill": "black" if fill[0] == 0 else "white"}


def _mirror(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    return ImageOps.mirror(im), {"axis": "vertical"}


_RESAMPLE = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _scale(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """0.3-2x (log-uniform), never below MIN_SIDE pixels on the short side."""
    factor = math.exp(rng.uniform(math.log(0.3), math.log(2.0)))
    factor = max(factor, MIN_SIDE / min(im.size))
    method = rng.choice(sorted(_RESAMPLE))
    size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
    return im.resize(size, _RESAMPLE[method]), {"factor": round(factor, 3), "resample": method}


def _filter(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """Gaussian blur (soft figure) or unsharp masking (sharpened figure)."""
    if rng.random() < 0.5:
        radius = rng.uniform(0.7, 2.5)
        return im.filter(ImageFilter.GaussianBlur(radius)), {"op": "blur", "radius": round(radius, 2)}
    radius, percent = rng.uniform(1.0, 3.0), rng.randint(80, 250)
    out = im.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=rng.randint(0, 3)))
    return out, {"op": "sharpen", "radius": round(radius, 2), "percent": percent}


def _tone(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """Gamma, contrast, or another display window (a linear ramp clipped at both ends)."""
    op = rng.choice(("gamma", "contrast", "window"))
    if op == "gamma":
        gamma = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        lut = [round(255 * (i / 255) ** gamma) for i in range(256)]
        return im.point(lut * len(im.getbands())), {"op": op, "gamma": round(gamma, 3)}
    if op == "contrast":
        factor = rng.uniform(0.6, 1.5)
        return ImageEnhance.Contrast(im).enhance(factor), {"op": op, "factor": round(factor, 3)}
    lo, hi = rng.randint(0, 50), rng.randint(190, 255)
    lut = [min(255, max(0, round((i - lo) * 255 / (hi - lo)))) for i in range(256)]
    return im.point(lut * len(im.getbands())), {"op": op, "low": lo, "high": hi}


_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "yellow": (255, 220, 0), "red": (230, 30, 30)}


def _arrow(draw: ImageDraw.ImageDraw, tip: tuple[float, float], angle: float, length: float, colour: tuple[int, int, int]) -> None:
    dx, dy = math.cos(angle), math.sin(angle)
    tail = (tip[0] - dx * length, tip[1] - dy * length)
    draw.line((tail, tip), fill=colour, width=max(2, round(length / 10)))
    head = length * 0.35
    left = (tip[0] - head * math.cos(angle - 0.45), tip[1] - head * math.sin(angle - 0.45))
    right = (tip[0] - head * math.cos(angle + 0.45), tip[1] - head * math.sin(angle + 0.45))
    draw.polygon([tip, left, right], fill=colour)


def _annotate(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """A panel letter in a corner and 1-3 arrows pointing into the picture."""
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    letter = rng.choice("ABCDEFGH")
    colour = rng.choice(sorted(_COLOURS))
    size = max(10, round(min(w, h) * rng.uniform(0.07, 0.14)))
    font = ImageFont.load_default(size=size)
    corner = rng.choice(("top-left", "top-right", "bottom-left"))
    x = 0.03 * w if corner.endswith("left") else w - 0.03 * w - size
    y = 0.03 * h if corner.startswith("top") else h - 0.03 * h - size * 1.2
    if rng.random() < 0.4:
        draw.rectangle((x - 2, y - 2, x + size, y + size * 1.2), fill=(0, 0, 0) if colour == "white" else (255, 255, 255))
    draw.text((x, y), letter, fill=_COLOURS[colour], font=font)
    arrows = rng.randint(1, 3)
    arrow_colour = rng.choice(sorted(_COLOURS))
    for _ in range(arrows):
        tip = (rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h)
        _arrow(draw, tip, rng.uniform(0, 2 * math.pi), min(w, h) * rng.uniform(0.08, 0.18), _COLOURS[arrow_colour])
    return out, {"letter": letter, "corner": corner, "colour": colour, "arrows": arrows, "arrow_colour": arrow_colour}


def _jpeg_quality(im: Image.Image, rng: random.Random) -> tuple[Image.Image, Params]:
    """Only draws the quality: the copy's file itself is written as JPEG at it."""
    return im, {"quality": rng.randint(20, 90)}


TRANSFORMS: dict[str, Transform] = {
    "crop": _crop,
    "rotate": _rotate,
    "mirror": _mirror,
    "scale": _scale,
    "filter": _filter,
    "tone": _tone,
    "annotate": _annotate,
    "jpeg": _jpeg_quality,
}


def kinds_of(category: str, rng: random.Random) -> list[str]:
    """The transform kinds of one copy, in application order."""
    if category in TRANSFORMS:
        return [category]
    chosen = set(rng.sample(KINDS, int(category.removeprefix("combo"))))
    return [k for k in KINDS if k in chosen]


def make_copy(im: Image.Image, kinds: list[str], rng: random.Random) -> tuple[bytes, str, list[Params]]:
    """Apply `kinds` in order; returns the encoded file, its suffix and each step's parameters."""
    steps: list[Params] = []
    quality: int | None = None
    for kind in kinds:
        im, params = TRANSFORMS[kind](im, rng)
        steps.append({"kind": kind, **params})
        if kind == "jpeg":
            quality = int(params["quality"])
    if min(im.size) < MIN_SIDE:
        factor = MIN_SIDE / min(im.size)
        im = im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BICUBIC)
        steps.append({"kind": "min-size", "factor": round(factor, 3)})
    buf = io.BytesIO()
    if quality is not None:
        im.save(buf, "JPEG", quality=quality)
        return buf.getvalue(), ".jpg", steps
    im.save(buf, "PNG")
    return buf.getvalue(), ".png", steps


# --- which real images: groups of patient / source figure, seeds, distractors --------------------


def figure_stem(name: str) -> str:
    """`X-p18-67-2.png` -> `X-p18-67`; `76%1.jpg` -> `76`; `1029.png` -> `1029`."""
    base = Path(name).name
    if "%" in base:
        return base.split("%", 1)[0]
    stem = Path(base).stem
    return re.sub(r"[-_]\d+$", "", stem) if "-" in stem else stem


def real_images(real_root: Path) -> list[str]:
    """Every image of the real dataset as `<class>/<name>`, sorted."""
    out = []
    for class_dir in CLASS_LABELS:
        folder = real_root / IMAGES_DIR / class_dir
        out += [f"{class_dir}/{p.name}" for p in sorted(folder.iterdir()) if p.is_file()]
    return out


def patients(real_root: Path) -> dict[str, str]:
    """`<class>/<name>` -> patient key, from the two metadata sheets (names without suffix get .png)."""
    out: dict[str, str] = {}
    sheet = real_root / "COVID-CT-MetaInfo.xlsx"
    if sheet.is_file():
        wb = openpyxl.load_workbook(sheet, read_only=True, data_only=True)
        try:
            for row in list(wb.worksheets[0].iter_rows(values_only=True))[1:]:
                name, patient = (str(row[0] or "").strip(), str(row[1] or "").strip()) if len(row) > 1 else ("", "")
                if name and patient:
                    out[f"CT_COVID/{name if Path(name).suffix else name + '.png'}"] = f"COVID:{patient}"
        finally:
            wb.close()
    table = real_root / "NonCOVID-CT-MetaInfo.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                name, patient = (row.get("image name") or "").strip(), (row.get("patient id") or "").strip()
                if name and patient:
                    out[f"CT_NonCOVID/{name}"] = f"NonCOVID:{patient}"
    return out


def load_true_pairs(path: Path = REAL_TRUE_PAIRS) -> set[frozenset[str]]:
    """The confirmed true duplicate pairs of the real data (empty before the list exists)."""
    if not path.is_file():
        return set()
    data = json.loads(path.read_text(encoding="utf-8"))
    return {frozenset((p["a"], p["b"])) for p in data["pairs"]}


def _groups(names: list[str], patient_of: dict[str, str], true_pairs: set[frozenset[str]]) -> list[list[str]]:
    """Connected groups of images sharing a patient, a source figure or a true duplicate."""
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def join(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    first: dict[str, str] = {}
    for n in names:
        for key in (f"fig:{n.split('/')[0]}/{figure_stem(n)}", patient_of.get(n)):
            if key is not None:
                join(n, first.setdefault(key, n))
    for pair in true_pairs:
        a, b = sorted(pair)
        if a in parent and b in parent:
            join(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for n in names:
        groups[find(n)].append(n)
    return sorted(groups.values())


def _bucket(group: list[str]) -> int:
    return hashlib.sha256(group[0].encode()).digest()[0] % 2


def _neighbour(source: str, group: list[str], used: set[str], true_pairs: set[frozenset[str]], patient_of: dict[str, str]) -> str | None:
    """Another image of the source's figure (else of its patient) that is not the same picture."""
    candidates = [n for n in group if n != source and n not in used and frozenset((n, source)) not in true_pairs]
    same_figure = [n for n in candidates if figure_stem(n) == figure_stem(source) and n.split("/")[0] == source.split("/")[0]]
    patient = patient_of.get(source)
    same_patient = [n for n in candidates if patient is not None and patient_of.get(n) == patient]
    pool = same_figure or same_patient
    return pool[0] if pool else None


def _clashes(name: str, used: set[str], true_pairs: set[frozenset[str]]) -> bool:
    return any(frozenset((name, u)) in true_pairs for u in used)


@dataclass(frozen=True)
class Selection:
    """Which real images a seed uses: (source, category, distractor or None) per copy."""

    picks: list[tuple[str, str, str | None]]


def select(real_root: Path, seed: int, per_category: int, true_pairs: set[frozenset[str]]) -> Selection:
    """Sources (one per group and pass) from the seed's half of the groups, each with a neighbour."""
    names = real_images(real_root)
    patient_of = patients(real_root)
    groups = [g for g in _groups(names, patient_of, true_pairs) if _bucket(g) == (seed - 1) % 2]
    rng = random.Random(f"select-{seed}")
    rng.shuffle(groups)
    wanted = [c for c in CATEGORIES for _ in range(per_category)]
    rng.shuffle(wanted)
    used: set[str] = set()
    picks: list[tuple[str, str, str | None]] = []
    for _pass in range(4):
        for group in groups:
            if len(picks) == len(wanted):
                return Selection(picks)
            free = [n for n in sorted(group) if n not in used and not _clashes(n, used, true_pairs)]
            if not free:
                continue
            source = rng.choice(free)
            used.add(source)
            other = _neighbour(source, sorted(group), used, true_pairs, patient_of)
            if other is not None and not _clashes(other, used, true_pairs):
                used.add(other)
            else:
                other = None
            picks.append((source, wanted[len(picks)], other))
    raise ValueError(f"seed {seed}: only {len(picks)} sources for {len(wanted)} copies")


# --- writing the dataset and its ground truth --------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """What a generated dataset holds: images (name -> facts) and the pairs that are one picture."""

    seed: int
    images: dict[str, dict[str, str]]
    pairs: list[dict[str, Any]]
    distractors: list[dict[str, str]]

    def positive(self) -> set[frozenset[str]]:
        return {frozenset((p["a"], p["b"])) for p in self.pairs}


def _split_of_other(split: str, rng: random.Random) -> str:
    return rng.choice([s for s in ("train", "val", "test") if s != split])


def build(out: Path, real_root: Path, seed: int, size: str = "small", true_pairs: set[frozenset[str]] | None = None) -> Truth:
    """Write the dataset under `out` (replaced if present) and `out/ground_truth.json`."""
    true_pairs = load_true_pairs() if true_pairs is None else true_pairs
    selection = select(real_root, seed, SIZES[size], true_pairs)
    rng = random.Random(f"build-{seed}")
    if out.exists():
        shutil.rmtree(out)
    entries: list[tuple[str, bytes, str, dict[str, str]]] = []  # class, bytes, suffix, facts
    pairs: list[tuple[int, int, str, list[Params]]] = []
    distractors: list[tuple[int, int]] = []
    for source, category, other in selection.picks:
        class_dir = source.split("/")[0]
        original_split = rng.choice(("train", "train", "val", "test"))
        src_bytes = (real_root / IMAGES_DIR / source).read_bytes()
        i = len(entries)
        entries.append((class_dir, src_bytes, Path(source).suffix.lower(), {"real": source, "role": "original", "split": original_split}))
        with Image.open(io.BytesIO(src_bytes)) as opened:
            im = _rgb(opened)
        data, suffix, steps = make_copy(im, kinds_of(category, rng), rng)
        entries.append((class_dir, data, suffix, {"real": source, "role": "copy", "split": _split_of_other(original_split, rng)}))
        pairs.append((i, i + 1, category, steps))
        if other is not None:
            other_bytes = (real_root / IMAGES_DIR / other).read_bytes()
            facts = {"real": other, "role": "distractor", "split": _split_of_other(original_split, rng)}
            entries.append((other.split("/")[0], other_bytes, Path(other).suffix.lower(), facts))
            distractors.append((i, len(entries) - 1))
    names = _write(out, entries, seed, rng)
    truth = Truth(
        seed=seed,
        images={names[k]: entries[k][3] for k in range(len(entries))},
        pairs=[{"a": names[a], "b": names[b], "category": c, "steps": s} for a, b, c, s in pairs],
        distractors=[{"a": names[a], "b": names[b], "why": _why(entries[a][3]["real"], entries[b][3]["real"])} for a, b in distractors],
    )
    (out / TRUTH_FILE).write_text(json.dumps(truth.__dict__, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return truth


def _rgb(im: Image.Image) -> Image.Image:
    """RGB pixels; transparency is laid on black, as a CT figure's background."""
    if im.mode in ("RGBA", "LA", "P"):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")


def _why(source: str, other: str) -> str:
    same = "source figure" if figure_stem(source) == figure_stem(other) else "patient"
    return f"same {same} as {source}: {other}"


def _write(out: Path, entries: list[tuple[str, bytes, str, dict[str, str]]], seed: int, rng: random.Random) -> list[str]:
    """Write the files under opaque shuffled names (a name tells nothing) and the split lists."""
    order = list(range(len(entries)))
    rng.shuffle(order)
    names = [""] * len(entries)
    lists: dict[tuple[str, str], list[str]] = defaultdict(list)
    for number, k in enumerate(order):
        class_dir, data, suffix, facts = entries[k]
        file_name = f"s{seed}-{number:04d}{suffix}"
        names[k] = f"{class_dir}/{file_name}"
        target = out / IMAGES_DIR / class_dir / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        lists[(class_dir, facts["split"])].append(file_name)
    for class_dir, label in CLASS_LABELS.items():
        for split in ("train", "val", "test"):
            path = out / SPLITS_DIR / label / f"{split}{class_dir}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n}\n" for n in sorted(lists[(class_dir, split)])), encoding="utf-8")
    return names


def load_truth(out: Path) -> Truth:
    data = json.loads((out / TRUTH_FILE).read_text(encoding="utf-8"))
    return Truth(seed=data["seed"], images=data["images"], pairs=data["pairs"], distractors=data["distractors"])


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Recall per category and overall, and precision, of reported pairs against the truth."""

    found: dict[str, int]
    total: dict[str, int]
    reported: int
    false_pairs: list[tuple[str, str]]
    missed: list[tuple[str, str]]

    @property
    def recall(self) -> float:
        return sum(self.found.values()) / max(1, sum(self.total.values()))

    @property
    def precision(self) -> float:
        return (self.reported - len(self.false_pairs)) / self.reported if self.reported else 1.0

    def recall_of(self, category: str) -> float:
        return self.found.get(category, 0) / self.total[category] if self.total.get(category) else float("nan")


def score(truth: Truth, reported: Iterable[tuple[str, str]]) -> Score:
    """Which truth pairs were reported (either order), and which reported pairs are not one picture."""
    positive = {frozenset((p["a"], p["b"])): p["category"] for p in truth.pairs}
    seen = {frozenset(pair) for pair in reported}
    found: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for pair, category in positive.items():
        total[category] += 1
        found[category] += pair in seen
    false_pairs = sorted(_ordered(p) for p in seen - set(positive))
    missed = sorted(_ordered(p) for p in set(positive) - seen)
    return Score(dict(found), dict(total), len(seen), false_pairs, missed)


def _ordered(pair: frozenset[str]) -> tuple[str, str]:
    a, b = sorted(pair)
    return a, b
