"""Where a sweep's points run: a local pool of processes, or a Dask distributed cluster.

Both give the same numbers: every point runs :func:`studies.sweeps.run.run_point` with one torch
thread (parallelism is across points), from the same model object and the same seed.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container's CPU set
    limits), not every core of the host."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalPool:
    """``workers`` processes on this machine (spawned, so that no torch thread pool is
    forked)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or usable_cores()
        # Workers stopped on Ctrl-C leave the executor's semaphores to multiprocessing's
        # resource tracker, which would warn about them; it takes its warning filters from
        # sys.warnoptions when it starts.
        if _QUIET_TRACKER not in sys.warnoptions:
            sys.warnoptions.append(_QUIET_TRACKER)
        self._executor = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_ignore_sigint)

    def describe(self) -> str:
        return f"local pool of {self.workers} worker process{'es' if self.workers > 1 else ''}"

    def share(self, obj: Any) -> Any:
        return obj

    def submit(self, fn: Callable, *args, key: str) -> cf.Future:
        return self._executor.submit(fn, *args)

    def wait_some(self, pending: set, timeout: float) -> tuple[set, set]:
        """The futures of ``pending`` done within ``timeout`` seconds (maybe none), and the rest."""
        done, left = cf.wait(pending, timeout, return_when=cf.FIRST_COMPLETED)
        return set(done), set(left)

    def close(self, cancel: bool = False, futures: Iterable = ()) -> None:
        if cancel:
            # Running points are lost work anyway: stop their processes now, then let the
            # executor see them gone and release its queues.
            processes = list(getattr(self._executor, "_processes", {}).values())
            for p in processes:
                p.terminate()
            self._executor.shutdown(wait=True, cancel_futures=True)
        else:
            self._executor.shutdown(wait=True)


class DaskPool:
    """An existing Dask distributed cluster, by its scheduler's address."""

    def __init__(self, address: str, timeout: float = 10.0, worker_timeout: float = 60.0) -> None:
        from distributed import Client

        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(f"--scheduler = {address!r}: no Dask scheduler answered there "
                                  f"({err})") from None
        self.address = address
        try:
            self.client.wait_for_workers(1, timeout=worker_timeout)
        except TimeoutError:
            self.client.close()
            raise ConnectionError(f"--scheduler = {address!r}: the scheduler has no workers "
                                  f"(start some with `dask worker {address}`)") from None

    def workers(self) -> int:
        """The workers the cluster has now."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def describe(self) -> str:
        n = self.workers()
        return f"Dask cluster at {self.address} ({n} worker{'s' if n != 1 else ''})"

    def share(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn: Callable, *args, key: str):
        return self.client.submit(fn, *args, key=key, pure=False)

    def wait_some(self, pending: set, timeout: float) -> tuple[set, set]:
        """The futures of ``pending`` done within ``timeout`` seconds (maybe none), and the rest."""
        deadline = time.monotonic() + timeout
        while True:
            done = {f for f in pending if f.done()}
            if done or time.monotonic() >= deadline:
                return done, set(pending) - done
            time.sleep(0.02)

    def close(self, cancel: bool = False, futures: Iterable = ()) -> None:
        if cancel:
            self.client.cancel(list(futures))
        self.client.close()


def make_pool(workers: int | None, scheduler: str | None):
    return DaskPool(scheduler) if scheduler else LocalPool(workers)
