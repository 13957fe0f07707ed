"""Where the per-image and per-pair work runs: processes on this machine, or a Dask cluster.

Owns the one executor interface of the leakage pipeline, "map this top-level function over these
items, yield the results in order as they come", and its two implementations:

- `LocalPool` (the default): worker processes on this machine, capped at the CPU count. They are
  forked from a clean fork server, so they hold none of the caller's open files (its lock files
  above all), and they die with their parent (`PR_SET_PDEATHSIG`), so a killed run leaves nothing
  behind that could keep the dataset locked.
- `DaskCluster`: an existing `distributed` scheduler (`dask scheduler` + `dask worker`, reading the
  images from the same paths). Items travel in batches, a bounded number in flight; a worker that
  dies has its batches run again elsewhere by the scheduler. `distributed` is imported only here,
  only when a scheduler address is given (the optional extra `cluster`).

Functions and results must pickle; the caller keeps all state (cache, search) and writes it.
Imports nothing from ctcurate; never prints.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Fewer items than this run in the calling process: starting or reaching workers costs more.
MIN_PARALLEL = 16
# Imported once by the fork server, so that every worker starts with them (numpy, OpenCV, Pillow, ...).
# The first one makes the fork server itself die with the run that started it.
WORKER_MODULES = ["ctcurate.leakage.forkserver_init", "ctcurate.leakage.worker_runtime", "ctcurate.leakage.pipeline"]
SCHEDULER_ENV = "CTCURATE_SCHEDULER"
_PR_SET_PDEATHSIG = 1


class ClusterUnavailable(Exception):
    """The scheduler cannot be used: Dask is not installed, it does not answer, or has no worker."""


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def capped_jobs(jobs: int | None) -> int:
    """The number of local workers for `jobs` (default and ceiling: the CPU count)."""
    return min(jobs, cpu_count()) if jobs else cpu_count()


def _batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def batch_size(n_items: int, slots: int, most: int, per_slot: int = 4) -> int:
    """About `per_slot` batches per worker slot (the late ones balance the load), at most `most` items."""
    return max(1, min(most, -(-n_items // (per_slot * max(1, slots)))))


class Executor(ABC):
    """Runs a top-level function over items; `slots` is how many run at once."""

    slots: int = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], min_parallel: int = MIN_PARALLEL) -> Iterator[R]:
        """`fn` of each item, in order, as soon as it and those before it are done."""
        if len(items) < min_parallel or self.slots <= 1:
            return map(fn, items)
        return self._map_parallel(fn, items)

    @abstractmethod
    def _map_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None:  # noqa: B027 (a no-op by default: an executor may have nothing to stop)
        """Stop what this executor started."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the local process pool -----------------------------------------------------------------


def request_death_with_parent() -> None:
    """Ask the kernel to kill this process when its parent process goes (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _die_with_parent(parent_pid: int) -> None:
    """Worker start: die with the fork server that is this process's parent, then check that the
    run it serves is still alive (it may have died before the request was made)."""
    request_death_with_parent()
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        os._exit(1)


def _fork_server() -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server: it was started by exec, so they inherit none of the caller's
    descriptors, and it exits when the caller does (its pipe closes), taking the workers with it."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_MODULES)
    return ctx


def start_fork_server() -> None:
    """Start the local workers' fork server now, without waiting for it: it imports the pipeline
    (about a second) while the caller does its own imports and reads the dataset, instead of
    after. A run that then needs no worker (a warm cache) loses nothing: the server dies with it."""
    if _fork_server().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class LocalPool(Executor):
    """Worker processes on this machine, started on first use; `jobs` is capped at the CPU count."""

    def __init__(self, jobs: int | None = None) -> None:
        self.slots = capped_jobs(jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._client_blas: Any = None  # the limits to restore on close

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.slots, mp_context=_fork_server(), initializer=_die_with_parent, initargs=(os.getpid(),)
            )
            # the workers take every core: the client's own matrix products (thumbnail scores, the
            # keypoint search) run beside them on one thread. OpenBLAS's pool would oversubscribe
            # the cores: COVID-CT's thumbnail scoring once took 3.6 s of wall instead of 1.3 s.
            from threadpoolctl import threadpool_limits

            self._client_blas = threadpool_limits(limits=1, user_api="blas")
        return self._pool

    def _map_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        return self._get().map(fn, items, chunksize=batch_size(len(items), self.slots, 8))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._client_blas is not None:
            self._client_blas.restore_original_limits()
            self._client_blas = None


# --- a Dask cluster -------------------------------------------------------------------------


def _untyped(module: object) -> Any:
    """`distributed` has no type hints: its calls are made through `Any`."""
    return module


def run_batch(fn: Callable[[T], R], batch: Sequence[T]) -> list[R]:
    """One Dask task: `fn` over a batch of items (one task per item would cost more than hashing)."""
    return [fn(x) for x in batch]


class DaskCluster(Executor):
    """The workers of a running Dask scheduler. Every worker must see the images at the same paths."""

    def __init__(self, address: str, timeout: float | None = None, most_per_batch: int = 64) -> None:
        try:
            import distributed
        except ImportError:
            raise ClusterUnavailable("Dask is not installed: pip install 'ctcurate[cluster]'") from None
        if timeout is None:
            from dask.config import get as config
            from dask.utils import parse_timedelta

            timeout = parse_timedelta(config("distributed.comm.timeouts.connect"))
        try:
            self.client: Any = _untyped(distributed).Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            self.client.close()
            raise ClusterUnavailable(f"the Dask scheduler at {address} has no worker") from None
        self.address = address
        self.most_per_batch = most_per_batch
        self.submitted = 0  # tasks sent to the scheduler by this client

    @property
    def slots(self) -> int:  # type: ignore[override]
        workers = self.client.scheduler_info()["workers"].values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def map(self, fn: Callable[[T], R], items: Sequence[T], min_parallel: int = MIN_PARALLEL) -> Iterator[R]:
        """Every item goes to the cluster (its workers are already running), none to this process."""
        return self._map_parallel(fn, items) if items else iter(())

    def _map_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """The first batches are submitted before this returns (the caller may do other work before
        it reads the results, as with a process pool); the rest as results are read."""
        import distributed

        slots = self.slots
        # many small batches: the cost of an item varies 20-fold (pixel verification), and a task
        # costs the scheduler about a millisecond
        batches = _batches(items, batch_size(len(items), slots, self.most_per_batch, per_slot=16))
        window = 4 * slots  # batches submitted and not yet handed out: bounds the client's memory
        index: dict[Any, int] = {}
        done: dict[int, list[R]] = {}
        running = _untyped(distributed).as_completed(loop=self.client.loop)
        next_submit = next_yield = 0

        def submit_more() -> None:
            nonlocal next_submit
            while next_submit < len(batches) and next_submit - next_yield < window:
                fut = self.client.submit(run_batch, fn, batches[next_submit], pure=False, priority=-next_submit)
                index[fut] = next_submit
                running.add(fut)
                next_submit += 1
                self.submitted += 1

        def results() -> Iterator[R]:
            nonlocal next_yield
            try:
                for fut in running:
                    done[index.pop(fut)] = fut.result()
                    while next_yield in done:
                        yield from done.pop(next_yield)
                        next_yield += 1
                    submit_more()
            finally:
                if index:
                    self.client.cancel(list(index))

        submit_more()
        return results()

    def close(self) -> None:
        self.client.close()


def open_executor(jobs: int | None = None, scheduler: str | None = None) -> Executor:
    """The Dask cluster at `scheduler` if given (`ClusterUnavailable` if it cannot be used), else a
    local pool of `jobs` processes."""
    return DaskCluster(scheduler) if scheduler else LocalPool(jobs)
