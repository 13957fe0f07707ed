"""The local process pool: ordered results, capped size, and workers that never outlive their run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from contribution_helpers import hold_out

from ctcurate.cli import main
from ctcurate.contribution.apply import lock_paths
from ctcurate.core.lock import locked
from ctcurate.leakage.execution import (
    LocalPool,
    batch_size,
    capped_jobs,
    cpu_count,
    open_executor,
)


def _square(x: int) -> int:
    return x * x


def test_local_pool_keeps_the_order_of_the_items():
    with LocalPool(2) as pool:
        assert list(pool.map(_square, list(range(100)))) == [x * x for x in range(100)]
        assert list(pool.map(_square, [3, 4])) == [9, 16]  # few items: run here, same answer


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _native_threads(_: int) -> tuple[list[int], int]:
    import cv2

    return _blas_threads(), cv2.getNumThreads()


@pytest.mark.skipif(cpu_count() < 2, reason="one worker runs its items in the client")
def test_workers_and_the_client_beside_them_run_native_libraries_single_threaded():
    """One worker per core: OpenCV's or OpenBLAS's own threads on top would oversubscribe them
    (the client's thumbnail scoring took 3x the wall time beside the workers)."""
    import numpy  # noqa: F401  # the client's BLAS is loaded

    before = _blas_threads()
    with LocalPool(2) as pool:
        for blas, opencv in pool.map(_native_threads, list(range(8)), min_parallel=1):
            assert blas and set(blas) == {1} and opencv == 1
        assert set(_blas_threads()) == {1}  # the client, while its workers run
    assert _blas_threads() == before  # given back to a library caller afterwards


def test_pool_size_is_capped_at_the_cpu_count():
    assert capped_jobs(1000) == cpu_count()
    assert LocalPool(1000).slots == cpu_count()
    assert capped_jobs(1) == 1
    assert capped_jobs(None) == cpu_count()


def test_batches_are_about_four_per_slot_and_bounded():
    assert batch_size(746, 2, 64) == 64
    assert batch_size(100, 2, 64) == 13
    assert batch_size(3, 8, 64) == 1


def test_without_a_scheduler_the_executor_is_local():
    assert isinstance(open_executor(3, None), LocalPool)


def test_jobs_above_the_cpu_count_are_capped_and_said(tmp_path):
    (tmp_path / "Images-processed" / "CT_COVID").mkdir(parents=True)
    res = CliRunner().invoke(main, ["check-leakage", "--data", str(tmp_path), "--jobs", "1000", "--cache", str(tmp_path / "c.sqlite")])
    assert f"--jobs 1000: using {cpu_count()} processes, the number of CPUs\n" in res.stderr
    assert res.exit_code == 1  # the run goes on (an empty image folder is an `image.none` finding)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killed_add_contribution_leaves_no_worker_and_no_lock(dataset_copy: Path, tmp_path: Path):
    """kill -9 the main process while its workers hash: they go within 5 s, and the dataset is free."""
    contrib = tmp_path / "contribution"
    hold_out(dataset_copy, ["2020.03.16.20035105-p6-64-1.png"], ["848.png"], contrib, lambda n, d: d or "10.5555/x")
    exe = Path(sys.executable).with_name("ctcurate")
    cmd = [str(exe), "add-contribution", str(contrib), "--data", str(dataset_copy), "--metadata",
           str(dataset_copy / "metadata"), "--cache", str(tmp_path / "fresh-cache.sqlite")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = lock_paths(dataset_copy, dataset_copy / "metadata")
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # the fork server and at least one worker, forked while the run holds its locks (a fresh
        # cache: it has all 746 images to hash, seconds of work)
        workers = _alive(_descendants(proc.pid))
        if all(p.is_file() for p in locks) and len(workers) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 3, "the run ended before its workers were seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 5
    while _alive(workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert _alive(workers) == []
    with locked(locks) as held:  # the next run gets in: the dead run's files are stale, not held
        assert all(lock.stale is not None for lock in held)
