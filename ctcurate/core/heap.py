"""Keeping freed memory in the process while a step churns through large numpy temporaries.

Owns one thing: how freed memory is kept, for a step (`kept_heap`) or for a worker process
(`keep_freed_memory`). glibc gives every large block (a numpy array over 32 MB) back to the
operating system when it is freed, so the next one faults all its pages in again; numpy asks for
transparent huge pages, which a fragmented machine must first compact. On a virtual machine that
costs up to 3 s per GB touched, and the keypoint search at 200,000 images touches tens of GB of
temporaries (sort partitions, window comparisons): a sixth of its time went to page faults.
Within `kept_heap`, freed blocks stay in the heap for the next temporary; at its end they are
trimmed back. A no-op where the C library is not glibc. Imports nothing from ctcurate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_ALL = (1 << 31) - 1  # the largest trim threshold mallopt takes
_lock = threading.Lock()
_depth = 0
_base_trim = _DEFAULT_TRIM  # what `kept_heap` restores: glibc's, or `keep_freed_memory`'s


@cache
def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  # glibc only: musl and macOS have other allocators
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


@contextmanager
def kept_heap() -> Iterator[None]:
    """Freed memory is reused within the block instead of being returned and faulted in again;
    the peak is unchanged (what is freed is reused), and the heap is trimmed when the outermost
    block ends. Nests, and is safe from several threads (the setting is the process's)."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)  # large blocks from the heap, which keeps what is freed
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _base_trim)
                libc.malloc_trim(0)


# A worker's blocks up to this size come from its heap (glibc's largest mmap threshold), and up to
# twice this much freed memory stays there: a pair's verification allocates and frees a few MB
# of temporaries a thousand times.
_WORKER_BLOCK = 32 * 1024 * 1024


def keep_freed_memory() -> None:
    """For the rest of this (worker) process, blocks up to 32 MB are taken from the heap and freed
    ones stay in it (up to 64 MB), for the next task's temporaries: glibc otherwise maps each block
    over its adaptive threshold anew and trims the heap's top, and the pages are faulted in again
    (replaying COVID-CT's 146 verifications: 120,000 page faults and 0.4 s of system time in about
    7 s, against 2,800 faults and 0.02 s)."""
    global _base_trim
    libc = _glibc()
    if libc is not None:
        with _lock:
            _base_trim = 2 * _WORKER_BLOCK
            libc.mallopt(_M_MMAP_THRESHOLD, _WORKER_BLOCK)
            if _depth == 0:  # inside a `kept_heap`, which keeps all and restores this at its end
                libc.mallopt(_M_TRIM_THRESHOLD, _base_trim)
