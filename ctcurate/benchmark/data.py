"""Which images a benchmark uses, and their pixels decoded once into a cached uint8 tensor file.

Owns the sample lists (official split, smoke subset, contributed images with their declared label)
and the tensor cache: every image is decoded and resized once, for the train pipeline (shorter side
resized, aspect kept) and for evaluation (resized and centre-cropped), and saved under the
`.ctcurate/` cache keyed by the files' content hashes and the image size, so that epochs never
re-decode PNG/JPEG. Problems with the input are returned as findings, never raised.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctcurate.core.atomic import atomic_path
from ctcurate.core.findings import Finding, error, warning
from ctcurate.leakage.hashing import file_sha256
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.layout import IMAGE_SUFFIXES, IMAGES_DIR, SPLIT_NAMES, label_of_class, split_files
from ctcurate.core.store import CACHE_DIR, default_cache_path

COVID, NONCOVID = 1, 0
CLASS_DIRS = {"CT_COVID": COVID, "CT_NonCOVID": NONCOVID}
# Declared labels, compared without case, spaces, '-' and '_' (so `CT_NonCOVID`, `non-covid` count).
LABEL_WORDS = {"covid": COVID, "ctcovid": COVID, "noncovid": NONCOVID, "ctnoncovid": NONCOVID}
FILE_COLUMNS = ("File name", "File", "Filename", "file_name", "Image", "image")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One image: where it is, its name as reported (`CT_COVID/x.png`), its label and split."""

    path: Path
    name: str
    label: int
    split: str


def eval_resize(image_size: int) -> int:
    return image_size


def train_resize(image_size: int) -> int:
    """The reference resizes to 256 before a 224 crop; other sizes keep that ratio."""
    return round(image_size * 256 / 224)


# --- sample lists ---------------------------------------------------------------------------


def official_samples(data_root: Path, splits_dir: Path) -> tuple[list[Sample], list[Finding]]:
    """Train/val/test samples from the split lists; a listed file that is missing is an error."""
    samples: list[Sample] = []
    findings: list[Finding] = []
    found = split_files(splits_dir)
    for class_dir in CLASS_DIRS:
        for split in SPLIT_NAMES:
            if not any(sf.class_dir == class_dir and sf.split == split for sf in found):
                findings.append(
                    error(
                        "benchmark.split-missing",
                        f"no {split} list for {class_dir}",
                        file=str(splits_dir / label_of_class(class_dir) / f"{split}{class_dir}.txt"),
                    )
                )
    for sf in found:
        lines = sf.path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        for row, line in enumerate(lines, start=1):
            name = line.strip()
            if not name:
                continue
            if not _plain_name(name):
                findings.append(error("benchmark.entry-outside", "a split-list entry must be a file name of its class "
                                      "folder; this one is a path, so it is not followed", file=str(sf.path), row=row,
                                      value=name))
                continue
            path = data_root / IMAGES_DIR / sf.class_dir / name
            if not path.is_file():
                findings.append(
                    error("benchmark.image-missing", f"listed image not found: {path}", file=str(sf.path), row=row, value=name)
                )
                continue
            samples.append(Sample(path, f"{sf.class_dir}/{name}", CLASS_DIRS[sf.class_dir], sf.split))
    return samples, findings


def _plain_name(name: str) -> bool:
    """A bare file name: no folder part (either slash), not `.`/`..`, no drive or NUL."""
    return not any(c in name for c in "/\\\x00") and name not in (".", "..") and not (len(name) > 1 and name[1] == ":")


def smoke_subset(samples: Sequence[Sample], per_class: dict[str, int], seed: int) -> list[Sample]:
    """A balanced, seeded subset: `per_class[split]` images of each class from each split."""
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for split, n in per_class.items():
        for label in (COVID, NONCOVID):
            pool = sorted((s for s in samples if s.split == split and s.label == label), key=lambda s: s.name)
            take = rng.permutation(len(pool))[:n]
            out.extend(pool[i] for i in sorted(take))
    return out


def _label_of_word(raw: object) -> int | None:
    text = "".join(ch for ch in str(raw).lower() if ch not in " -_\u00a0\t")
    return LABEL_WORDS.get(text)


def contribution_samples(folder: Path) -> tuple[list[Sample], list[Finding]]:
    """Contributed images with their declared label.

    The label comes from a `Label` column (COVID / NonCOVID) of a sheet (`.csv` or `.xlsx`) in the
    folder, else from class sub-folders `CT_COVID/` and `CT_NonCOVID/` (also under `Images-processed/`).
    """
    if not folder.is_dir():
        return [], [error("benchmark.contribution-missing", f"{folder}: not a folder")]
    sheets = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".xlsx") and not p.name.startswith(("~$", ".")))
    if sheets:
        return _samples_from_sheet(folder, sheets[0])
    base = folder / IMAGES_DIR if (folder / IMAGES_DIR).is_dir() else folder
    samples: list[Sample] = []
    for class_dir, label in CLASS_DIRS.items():
        sub = base / class_dir
        if sub.is_dir():
            for p in sorted(sub.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(Sample(p, f"{class_dir}/{p.name}", label, "contribution"))
    if not samples:
        return [], [
            error(
                "benchmark.contribution-empty",
                f"{folder}: no labelled images (expected CT_COVID/ and CT_NonCOVID/ sub-folders or a sheet with a Label column)",
                file=str(folder),
            )
        ]
    return samples, []


def _samples_from_sheet(folder: Path, sheet: Path) -> tuple[list[Sample], list[Finding]]:
    import pandas as pd

    try:
        if sheet.suffix.lower() == ".csv":
            df = pd.read_csv(sheet, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            df = pd.read_excel(sheet, dtype=str, keep_default_na=False, engine="openpyxl")
    except Exception as exc:  # pandas raises many types for an unreadable sheet
        return [], [error("benchmark.sheet-unreadable", f"cannot read the sheet: {exc}", file=str(sheet))]
    columns = {str(c).strip(): c for c in df.columns}
    file_col = next((columns[c] for c in FILE_COLUMNS if c in columns), None)
    label_col = next((columns[c] for c in columns if c.lower() == "label"), None)
    if file_col is None or label_col is None:
        return [], [error("benchmark.sheet-columns", "the sheet needs a 'File name' and a 'Label' column", file=str(sheet))]
    by_name = {p.name: p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    samples: list[Sample] = []
    findings: list[Finding] = []
    for i, rec in enumerate(df.to_dict("records"), start=2):
        name = str(rec[file_col]).strip()
        if not name:
            continue
        label = _label_of_word(rec[label_col])
        if label is None:
            findings.append(
                error("benchmark.label-invalid", "Label must be COVID or NonCOVID", file=str(sheet), row=i, column=str(label_col), value=str(rec[label_col]))
            )
            continue
        path = by_name.get(name)
        if path is None:
            findings.append(error("benchmark.image-missing", f"image {name!r} not found in {folder}", file=str(sheet), row=i, column=str(file_col), value=name))
            continue
        samples.append(Sample(path, path.relative_to(folder).as_posix(), label, "contribution"))
    return samples, findings


# --- tensor cache ---------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Decoded pixels of a list of samples, ready for batching.

    `train` holds one uint8 CxHxW tensor per image (shorter side resized, aspect kept) for the
    random crops; `eval` is one uint8 Nx3xSxS tensor (resized and centre-cropped).
    """

    names: list[str]
    labels: torch.Tensor
    train: list[torch.Tensor]
    eval: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, keep: Sequence[int]) -> ImageSet:
        idx = list(keep)
        return ImageSet(
            [self.names[i] for i in idx], self.labels[idx], [self.train[i] for i in idx], self.eval[idx] if idx else self.eval[:0]
        )

    def to(self, device: torch.device) -> ImageSet:
        return ImageSet(self.names, self.labels.to(device), [t.to(device) for t in self.train], self.eval.to(device))

    @staticmethod
    def concat(a: ImageSet, b: ImageSet) -> ImageSet:
        return ImageSet(a.names + b.names, torch.cat([a.labels, b.labels]), a.train + b.train, torch.cat([a.eval, b.eval]))


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    hit: bool
    seconds: float
    decoded: int
    findings: list[Finding] = field(default_factory=list)


def tensor_cache_dir(data_root: Path | None) -> Path:
    """`<data root>/.ctcurate/benchmark` when writable, else the user's ctcurate cache folder."""
    if data_root is not None:
        ours = data_root / CACHE_DIR
        if _writable(ours if ours.exists() else data_root):
            return ours / "benchmark"
    return default_cache_path(None).parent / "benchmark"


def _writable(folder: Path) -> bool:
    # A folder marked read-only stays untouched even for root, who could write there anyway.
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False



def cache_key(samples: Sequence[Sample], image_size: int) -> str:
    """Content hashes of every file, with its name and label, the sizes and the cache format."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}|{train_resize(image_size)}".encode())
    with ThreadPoolExecutor(max_workers=4) as pool:
        for s, digest in zip(samples, pool.map(file_sha256, [s.path for s in samples])):
            h.update(f"|{s.name}|{s.label}|{digest}".encode())
    return h.hexdigest()


def _resize_short(im: Image.Image, short: int) -> Image.Image:
    # torchvision's Resize(int): the shorter side becomes `short`, the longer keeps the aspect.
    w, h = im.size
    if w <= h:
        return im.resize((short, int(short * h / w)), Image.Resampling.BILINEAR)
    return im.resize((int(short * w / h), short), Image.Resampling.BILINEAR)


def _center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode(path: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image as (train tensor, eval tensor); raises UnreadableImage."""
    im = open_image(path).convert("RGB")
    train = _to_tensor(_resize_short(im, train_resize(image_size)))
    ev = _to_tensor(_center_crop(_resize_short(im, eval_resize(image_size)), image_size))
    return train, ev


def load_images(samples: Sequence[Sample], image_size: int, cache_dir: Path, workers: int | None = None) -> tuple[ImageSet | None, CacheInfo]:
    """Pixels of `samples` from the cache, decoding (in threads) and saving them on a miss.

    An unreadable image is an error finding and the set is None: a benchmark must not silently
    train on fewer images than its split lists name.
    """
    start = time.perf_counter()
    key = cache_key(samples, image_size)
    path = cache_dir / f"images-{image_size}-{key[:24]}.pt"
    names = [s.name for s in samples]
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                train = list(torch.split(blob["train_flat"], blob["train_numel"].tolist()))
                shapes = blob["train_shapes"].tolist()
                train = [t.view(*shape) for t, shape in zip(train, shapes)]
                return ImageSet(names, labels, train, blob["eval"]), CacheInfo(path, True, time.perf_counter() - start, 0)
        except (OSError, RuntimeError, KeyError, ValueError, EOFError):
            pass  # a damaged cache file is rebuilt below
    findings: list[Finding] = []

    def work(s: Sample) -> tuple[torch.Tensor, torch.Tensor] | Finding:
        try:
            return decode(s.path, image_size)
        except UnreadableImage as exc:
            return error("benchmark.image-unreadable", exc.reason, file=str(s.path))

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(work, samples))
    findings = [d for d in decoded if isinstance(d, Finding)]
    if findings:
        return None, CacheInfo(path, False, time.perf_counter() - start, 0, findings)
    pairs = [d for d in decoded if not isinstance(d, Finding)]
    train = [p[0] for p in pairs]
    ev = torch.stack([p[1] for p in pairs]) if pairs else torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    blob = {
        "key": key,
        "names": names,
        "train_flat": torch.cat([t.reshape(-1) for t in train]) if train else torch.empty(0, dtype=torch.uint8),
        "train_numel": torch.tensor([t.numel() for t in train], dtype=torch.int64),
        "train_shapes": torch.tensor([list(t.shape) for t in train], dtype=torch.int64).reshape(-1, 3),
        "eval": ev,
    }
    cache_findings: list[Finding] = []
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
    except OSError as exc:
        cache_findings.append(warning("benchmark.cache-unwritable", f"tensor cache not saved: {exc}", file=str(path)))
    return ImageSet(names, labels, train, ev), CacheInfo(path, False, time.perf_counter() - start, len(samples), cache_findings)
