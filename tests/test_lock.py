"""The dataset lock: one holder at a time, released by the kernel when its holder dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from ctcurate.core.lock import LockHeld, acquire, locked, release


def test_second_acquire_is_refused_and_names_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    first = acquire(path)
    try:
        with pytest.raises(LockHeld, match=rf"another ctcurate run holds this dataset \(pid {os.getpid()} on "):
            acquire(path)
    finally:
        release(first)
    assert not path.exists()
    again = acquire(path)
    assert again.stale is None
    release(again)


def test_lock_of_a_killed_process_is_reported_stale_and_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    code = f"from ctcurate.core.lock import acquire; from pathlib import Path; acquire(Path({str(path)!r})); print('held', flush=True); import time; time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {holder.pid} "):
            acquire(path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
    assert json.loads(path.read_text())["pid"] == holder.pid  # the file outlives its holder
    taken = acquire(path)
    assert taken.stale is not None and taken.stale["pid"] == holder.pid and taken.stale["alive"] is False
    release(taken)


def test_locked_takes_each_path_once_and_releases_all(tmp_path):
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    with locked([b, a, a]) as held:
        assert [h.path for h in held] == [a.resolve(), b.resolve()]
        with pytest.raises(LockHeld):
            acquire(b)
    assert not a.exists() and not b.exists()
    release(acquire(a))  # free again
