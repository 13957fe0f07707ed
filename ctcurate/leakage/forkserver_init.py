"""Imported first by the fork server of `execution.LocalPool`, and by nothing else.

Owns one thing: the fork server dies with the run that started it. Its workers already do
(`execution._die_with_parent`), but the server itself would live on while it still imports its
preload modules (seconds under load), outliving a `kill -9` of the run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1

if sys.platform.startswith("linux"):
    _parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _parent == 1 or os.getppid() != _parent:  # the run died before the request was made
        os._exit(1)
