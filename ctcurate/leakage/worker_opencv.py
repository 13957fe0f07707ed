"""Imported by the fork server of `execution.LocalPool` (after `forkserver_init`), and by nothing else.

Owns one thing: the local workers load OpenCV once, in the server, single-threaded. There is
already one worker process per CPU; OpenCV's own thread pool in each of them oversubscribes the
cores (an affine ECC fit at 288 px took 94 ms with OpenCV's default 2 threads and 49 ms with one,
on this 2-core machine beside other work), and each worker importing it anew costs its start-up.
"""

from __future__ import annotations

import cv2

cv2.setNumThreads(1)
