"""Imported first by the fork server of `execution.LocalPool`, and by nothing else.

Owns one thing: the fork server, and every process it forks, die with the run that started it.
The server would otherwise live on while it still imports its preload modules (seconds under
load), and a child forked just before the run was killed blocks for ever reading its start-up data
(it holds that pipe's write end itself) before any worker initializer could ask for the signal:
so the request is made at fork time, in the child, before anything else runs.
"""

from __future__ import annotations

import os

from ctcurate.leakage.execution import request_death_with_parent

_parent = os.getppid()
request_death_with_parent()
if _parent == 1 or os.getppid() != _parent:  # the run died before the request was made
    os._exit(1)

_server = os.getpid()


def _die_with_server() -> None:
    request_death_with_parent()
    if os.getppid() != _server:  # the server died before the request was made
        os._exit(1)


os.register_at_fork(after_in_child=_die_with_server)
