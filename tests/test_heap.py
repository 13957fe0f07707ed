"""core.heap: freed memory stays in the process inside `kept_heap`, and is given back at its end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ctcurate.core import heap


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(heap._glibc() is None, reason="glibc's allocator only (CI runs on glibc)")
def test_a_freed_block_is_kept_for_the_next_one_and_given_back_at_the_end():
    base = _rss_mib()
    with heap.kept_heap(), heap.kept_heap():  # nests
        block = np.ones(200 << 17)  # 200 MiB, touched
        del block
        assert _rss_mib() - base > 150  # kept: the next temporary reuses these pages
        again = np.ones(200 << 17)
        assert _rss_mib() - base < 300  # ... instead of faulting in new ones
        del again
    assert _rss_mib() - base < 50  # trimmed back once the outermost block ends
    block = np.ones(200 << 17)
    del block
    assert _rss_mib() - base < 50  # outside, a freed large block goes back at once, as before


@pytest.mark.skipif(heap._glibc() is None, reason="glibc's allocator only (CI runs on glibc)")
def test_a_worker_keeps_freed_blocks_up_to_the_worker_block_size_for_good():
    """`keep_freed_memory` is for the rest of the process: checked in a process of its own."""
    code = """
import os, numpy as np
from ctcurate.core import heap
def rss():
    with open('/proc/self/statm') as fh:
        return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
heap.keep_freed_memory()
base = rss()
block = np.ones(16 << 17); del block  # 16 MiB, touched, freed
kept = rss() - base
block = np.ones(16 << 17); del block  # the next one reuses the same pages
again = rss() - base
big = np.ones(64 << 17); del big  # 64 MiB: over the block size, mapped and given back
after_big = rss() - base
with heap.kept_heap():  # a step inside the worker trims at its end, and restores the worker's setting
    pass
trimmed = rss()
block = np.ones(16 << 17); del block
print(kept, again, after_big, rss() - trimmed)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    kept, again, after_big, kept_after_step = (float(x) for x in out)
    assert kept > 12 and again < kept + 4 and after_big < kept + 8
    assert kept_after_step > 12
