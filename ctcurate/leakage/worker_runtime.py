"""Imported by the fork server of `execution.LocalPool` (after `forkserver_init`), and by nothing else.

Owns one thing: how the local workers run their native work, set once in the server for every
worker it forks.
- OpenCV and the BLAS (numpy's OpenBLAS) run single-threaded. There is already one
  worker process per CPU; a library's own thread pool in each of them oversubscribes the cores
  (an affine ECC fit at 288 px took 94 ms with OpenCV's default 2 threads and 49 ms with one, on
  a 2-core machine beside other work). The client's BLAS is limited by `execution.LocalPool`
  while the workers run.
- Freed memory stays in the worker's heap for the next task (`core.heap.keep_freed_memory`).
- What the workers import on first use is imported here, once: OpenCV and Pillow's image plugins.
"""

from __future__ import annotations

import cv2
from PIL import Image
from threadpoolctl import threadpool_limits

from ctcurate.core.heap import keep_freed_memory

Image.init()
cv2.setNumThreads(1)
threadpool_limits(limits=1, user_api="blas")
keep_freed_memory()
