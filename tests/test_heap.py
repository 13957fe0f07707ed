"""core.heap: freed memory stays in the process inside `kept_heap`, and is given back at its end."""

from __future__ import annotations

import os

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
