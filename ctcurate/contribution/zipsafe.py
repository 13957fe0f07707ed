"""Unpacking an untrusted zip without letting it write anywhere else or fill the disk.

Owns the zip checks (paths inside the target only, no links or special files, no encryption, file
count, total size, per-file size and compression-ratio limits, streamed so a lying header cannot
exceed them) and the extraction. Pixel bombs inside the images are `images.open_image`'s job.
Imports only `findings`.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ctcurate.core.findings import Finding, error, has_errors, warning


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 20_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 256 * 1024**2
    max_ratio: float = 200.0  # uncompressed / compressed, checked for members over `ratio_floor`
    ratio_floor: int = 1024**2


# Archive litter from macOS / Windows tools, skipped with a warning rather than refused.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipCheck:
    """The verdict on an archive: what would be extracted (relative POSIX paths) and the problems."""

    members: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not has_errors(self.findings)


def _clean_name(raw: str) -> str:
    """The member's relative POSIX path ('' for the archive root)."""
    name = posixpath.normpath(raw.replace("\\", "/")) if raw else ""
    return "" if name == "." else name


def _member_problem(info: zipfile.ZipInfo) -> tuple[str, str] | None:
    name = info.filename
    mode = info.external_attr >> 16
    if "\x00" in name:
        return "zip.bad-name", "member name holds a NUL byte"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        return "zip.absolute-path", "member has an absolute path"
    if any(part == ".." for part in unified.split("/")):
        return "zip.path-traversal", "member path climbs out of the archive ('..')"
    if stat.S_ISLNK(mode):
        return "zip.link", "member is a symbolic link"
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
        return "zip.special-file", "member is not a regular file (device, fifo or socket)"
    if info.flag_bits & 0x1:
        return "zip.encrypted", "member is encrypted"
    return None


def check_zip(path: Path, limits: ZipLimits = ZipLimits()) -> ZipCheck:
    """Inspect the archive's directory (no extraction); every problem found, not only the first."""
    where = {"file": path.name}
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return ZipCheck((), (error("zip.corrupt", f"not a readable zip archive: {exc}", **where),))
    findings: list[Finding] = []
    members: list[str] = []
    seen: dict[str, str] = {}
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            findings.append(
                error("zip.too-many-files", f"{len(infos)} members; the limit is {limits.max_files}", **where)
            )
        for info in infos:
            problem = _member_problem(info)
            if problem:
                findings.append(error(problem[0], problem[1], value=info.filename, **where))
                continue
            name = _clean_name(info.filename)
            if info.is_dir() or not name:
                continue
            if _JUNK.search(info.filename):
                findings.append(warning("zip.skipped", "archive litter skipped", value=info.filename, **where))
                continue
            key = name.casefold()
            if key in seen:
                findings.append(
                    error("zip.duplicate-name", f"two members unpack to the same file (also {seen[key]!r})",
                          value=info.filename, **where)
                )
                continue
            seen[key] = info.filename
            if info.file_size > limits.max_file_bytes:
                findings.append(
                    error("zip.too-large", f"member unpacks to {info.file_size} bytes; the limit is "
                          f"{limits.max_file_bytes}", value=info.filename, **where)
                )
            if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                findings.append(
                    error("zip.ratio", f"member expands {info.file_size / max(info.compress_size, 1):.0f}x; "
                          f"the limit is {limits.max_ratio:.0f}x (decompression bomb?)", value=info.filename, **where)
                )
            total += info.file_size
            members.append(name)
        if total > limits.max_total_bytes:
            findings.append(
                error("zip.too-large", f"archive unpacks to {total} bytes; the limit is {limits.max_total_bytes}",
                      **where)
            )
    return ZipCheck(tuple(members), tuple(findings))


class ZipLimitExceeded(Exception):
    """A member produced more bytes than its header declared or than the limits allow."""


def extract(path: Path, dest: Path, limits: ZipLimits = ZipLimits()) -> ZipCheck:
    """Check, then extract into `dest` (which must be empty) only when the check passed.

    Bytes are counted while streaming, so a member whose header under-states its size is cut off
    and reported instead of filling the disk.
    """
    check = check_zip(path, limits)
    if not check.ok:
        return check
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    total = 0
    findings = list(check.findings)
    try:
        with zipfile.ZipFile(path) as zf:
            wanted = set(check.members)
            for info in zf.infolist():
                name = _clean_name(info.filename)
                if name not in wanted or info.is_dir():
                    continue
                target = (root / PurePosixPath(name)).resolve()
                if root not in target.parents:
                    raise ZipLimitExceeded(f"{info.filename}: resolves outside the target")
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        total += len(chunk)
                        if written > max(info.file_size, 0) or written > limits.max_file_bytes:
                            raise ZipLimitExceeded(f"{info.filename}: more bytes than its header declares")
                        if total > limits.max_total_bytes:
                            raise ZipLimitExceeded("archive exceeds the total size limit while unpacking")
                        out.write(chunk)
    except ZipLimitExceeded as exc:
        shutil.rmtree(dest, ignore_errors=True)
        findings.append(error("zip.too-large", str(exc), file=path.name))
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, EOFError, NotImplementedError, ValueError) as exc:
        # zlib.error: damaged deflate data; NotImplementedError: a compression method zipfile lacks.
        shutil.rmtree(dest, ignore_errors=True)
        findings.append(error("zip.corrupt", f"cannot unpack: {exc}", file=path.name))
    return ZipCheck(check.members, tuple(findings))
