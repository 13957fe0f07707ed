"""Where a COVID-CT-style dataset keeps its parts, and how the tool finds them.

Owns path conventions only (no parsing, no checks):

    <data root>/Images-processed/<class>/<image>      classes are the sub-folders
    <metadata>/COVID-CT-MetaInfo.xlsx, NonCOVID-CT-MetaInfo.csv
    <metadata>/Data-split/<label>/{train,val,test}<class>.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = "Images-processed"
SPLITS_DIR = "Data-split"
COVID_SHEET = "COVID-CT-MetaInfo.xlsx"
NONCOVID_SHEET = "NonCOVID-CT-MetaInfo.csv"
SPLIT_NAMES = ("train", "val", "test")
DATA_ENV = "CTCURATE_DATA"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")

# The two class folders (upstream names), declared here only; each has a split-list folder (label).
COVID_CLASS, NONCOVID_CLASS = "CT_COVID", "CT_NonCOVID"
CLASS_DIRS = (COVID_CLASS, NONCOVID_CLASS)
CLASS_LABELS = {COVID_CLASS: "COVID", NONCOVID_CLASS: "NonCOVID"}
# A declared label, compared without case, spaces, '-' and '_' (so `CT_NonCOVID`, `non-covid` count).
_LABEL_WORDS = {"covid": COVID_CLASS, "ctcovid": COVID_CLASS, "noncovid": NONCOVID_CLASS, "ctnoncovid": NONCOVID_CLASS}

# The repository's own curated copy of the metadata (the embedded default): <repo>/metadata, beside
# the package folder (this file is <repo>/ctcurate/core/layout.py).
EMBEDDED_METADATA = Path(__file__).resolve().parents[2] / "metadata"


class DataRootNotFound(Exception):
    """No image root was given and none could be found."""


def default_metadata_dir() -> Path:
    """The checked-in `metadata/` of this repository, else `./metadata`."""
    if EMBEDDED_METADATA.is_dir():
        return EMBEDDED_METADATA
    return Path.cwd() / "metadata"


def resolve_data_root(explicit: str | os.PathLike[str] | None) -> Path:
    """The folder holding `Images-processed/`: the option, else $CTCURATE_DATA."""
    raw = explicit if explicit is not None else os.environ.get(DATA_ENV)
    if not raw:
        raise DataRootNotFound(
            f"no image root given: pass --images/--data ROOT or set {DATA_ENV} "
            f"to the folder that holds {IMAGES_DIR}/"
        )
    root = Path(raw).expanduser()
    if (root / IMAGES_DIR).is_dir():
        return root
    if root.name == IMAGES_DIR and root.is_dir():
        return root.parent
    raise DataRootNotFound(f"{root}: no {IMAGES_DIR}/ folder there")


def class_of_label(word: object) -> str | None:
    """The class folder a declared label names (`COVID`, `Non-COVID`, `CT_NonCOVID`, ...), else None."""
    return _LABEL_WORDS.get("".join(ch for ch in str(word).lower() if ch not in " -_\u00a0\t"))


def label_of_class(class_dir: str) -> str:
    """`CT_COVID` -> `COVID`; an unknown class folder is its own label."""
    return CLASS_LABELS.get(class_dir, class_dir.removeprefix("CT_"))


@dataclass(frozen=True)
class SplitFile:
    """One split list: which class folder and split it describes, and where it is."""

    class_dir: str
    split: str
    path: Path


def split_files(splits_dir: Path, class_dirs: list[str] | None = None) -> list[SplitFile]:
    """The split lists that exist under `splits_dir`, in upstream naming."""
    out = []
    for class_dir in class_dirs or list(CLASS_LABELS):
        label = label_of_class(class_dir)
        for split in SPLIT_NAMES:
            path = splits_dir / label / f"{split}{class_dir}.txt"
            if path.is_file():
                out.append(SplitFile(class_dir, split, path))
    return out


def list_images(data_root: Path) -> dict[str, list[Path]]:
    """Class folder name -> sorted image paths under `Images-processed/<class>/`."""
    images_root = data_root / IMAGES_DIR
    return {class_dir: [images_root / class_dir / n for n in names] for class_dir, names in image_names(data_root).items()}


def image_names(data_root: Path) -> dict[str, list[str]]:
    """`list_images` as file names only (a string per image, not a path object: large collections)."""
    images_root = data_root / IMAGES_DIR
    out: dict[str, list[str]] = {}
    for class_path in sorted(p for p in images_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        with os.scandir(class_path) as entries:
            out[class_path.name] = sorted(
                e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and _is_file(e)
            )
    return out


def _is_file(entry: os.DirEntry[str]) -> bool:
    """`Path.is_file` of a directory entry: a link that loops or leads nowhere is not a file."""
    try:
        return entry.is_file()
    except OSError:
        return False


def special_entries(data_root: Path) -> list[tuple[str, str]]:
    """(`Images-processed/<class>/<name>`, what it is) for each entry of a class folder that is
    neither a regular file nor a folder: a FIFO, device or socket, or a link that loops, leads
    nowhere or leads to one of those. `list_images` skips them; this says that it did."""
    import errno
    import stat

    out = []
    images_root = data_root / IMAGES_DIR
    for class_path in sorted(p for p in images_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(class_path.iterdir()):
            if entry.name.startswith("."):
                continue
            mode = entry.lstat().st_mode
            link = stat.S_ISLNK(mode)
            if link:
                try:
                    mode = entry.stat().st_mode
                except OSError as exc:
                    why = "loops" if exc.errno == errno.ELOOP else "leads nowhere"
                    out.append((f"{IMAGES_DIR}/{class_path.name}/{entry.name}", f"a symbolic link that {why}"))
                    continue
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                continue
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            out.append((f"{IMAGES_DIR}/{class_path.name}/{entry.name}", f"a link to {kind}" if link else kind))
    return out
