"""Which images a benchmark uses, and their pixels decoded once into a cached uint8 tensor file.

Owns the sample lists (official split, smoke subset, contributed images with their declared label)
and the tensor cache: every image is decoded and resized once, for the train pipeline (shorter side
resized, aspect kept) and for evaluation (resized and centre-cropped), and saved in
`benchmark/` beside the cache file, keyed by the files' content hashes and the image size, so that epochs never
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
from ctcurate.contribution.source import Contribution, labelled_images
from ctcurate.core.dataset import read_split_lines
from ctcurate.core.sheets import SheetError
from ctcurate.core.findings import Finding, error, warning
from ctcurate.leakage.hashing import file_sha256
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.layout import COVID_CLASS, IMAGES_DIR, NONCOVID_CLASS, SPLIT_NAMES, class_of_label, label_of_class, split_files
from ctcurate.core.store import cache_folder

COVID, NONCOVID = 1, 0
CLASS_DIRS = {COVID_CLASS: COVID, NONCOVID_CLASS: NONCOVID}
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
    try:
        lines = read_split_lines(splits_dir, list(CLASS_DIRS))
    except SheetError as exc:
        return [], [*findings, error("benchmark.split-unreadable", str(exc))]
    for line in lines:
        if not line.name:
            continue
        if not _plain_name(line.name):
            findings.append(error("benchmark.entry-outside", "a split-list entry must be a file name of its class "
                                  "folder; this one is a path, so it is not followed", file=str(line.path), row=line.line,
                                  value=line.name))
            continue
        path = data_root / IMAGES_DIR / line.class_dir / line.name
        if not path.is_file():
            findings.append(
                error("benchmark.image-missing", f"listed image not found: {path}", file=str(line.path), row=line.line, value=line.name)
            )
            continue
        samples.append(Sample(path, f"{line.class_dir}/{line.name}", CLASS_DIRS[line.class_dir], line.split))
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


def contribution_samples(contribution: Contribution) -> tuple[list[Sample], list[Finding]]:
    """Contributed images with their declared label (`contribution.source`: a folder or .zip).

    The label comes from the `Label` column (COVID / NonCOVID) of the contribution's sheet, else from
    class sub-folders `CT_COVID/` and `CT_NonCOVID/` (also under `Images-processed/`).
    """
    if contribution.root is None:
        return [], [error("benchmark.contribution-missing", f"{contribution.source}: not a folder or a readable .zip",
                          file=str(contribution.source))]
    if contribution.sheet is not None:
        return _samples_from_sheet(contribution)
    samples = [Sample(img.path, rel, CLASS_DIRS[img.class_dir], "contribution")
               for rel, img in labelled_images(contribution).items() if img.class_dir is not None]
    if not samples:
        return [], [
            error(
                "benchmark.contribution-empty",
                f"{contribution.source}: no labelled images (expected CT_COVID/ and CT_NonCOVID/ sub-folders or a sheet with a Label column)",
                file=str(contribution.source),
            )
        ]
    return samples, []


def _samples_from_sheet(contribution: Contribution) -> tuple[list[Sample], list[Finding]]:
    sheet = str(contribution.sheet)
    unusable = [f for f in contribution.findings if f.code == "sheet.unreadable"
                or (f.code == "column.missing" and f.column in ("File name", "Label"))]
    if unusable:
        code = "benchmark.sheet-unreadable" if unusable[0].code == "sheet.unreadable" else "benchmark.sheet-columns"
        return [], [error(code, unusable[0].message, file=sheet)]
    by_name = {p.name: (rel, p) for rel, p in contribution.images.items()} | {rel: (rel, p) for rel, p in contribution.images.items()}
    samples: list[Sample] = []
    findings: list[Finding] = []
    for r in contribution.rows:
        name, label = r.text("File name").strip(), r.text("Label")
        if not name:
            continue
        class_dir = class_of_label(label)
        if class_dir is None:
            findings.append(error("benchmark.label-invalid", "Label must be COVID or NonCOVID", file=sheet, row=r.row, column="Label", value=label))
            continue
        hit = by_name.get(name)
        if hit is None:
            findings.append(error("benchmark.image-missing", f"image {name!r} not found in {contribution.source}", file=sheet, row=r.row, column="File name", value=name))
            continue
        rel, path = hit
        samples.append(Sample(path, rel, CLASS_DIRS[class_dir], "contribution"))
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


def tensor_cache_dir(cache: Path | None = None) -> Path:
    """`benchmark/` beside the cache file (`--cache`, else $CTCURATE_CACHE, else the user's cache folder)."""
    return cache_folder(cache) / "benchmark"


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
