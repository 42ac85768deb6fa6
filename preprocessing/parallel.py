"""Building a store over several processes: each file analysed in a worker, the results taken in file order.

Workers start with "spawn" (a fresh interpreter: forking a process whose torch threads have started can hang),
use one torch thread each (on 2 busy cores, torch's default of one thread per core made each process's STFTs
about 3x slower: 64 against 22 ms a 30 s file) and ignore SIGINT (Ctrl-C reaches the whole process group; the
building process alone handles it and shuts the pool down, so an interrupted build leaves only its temporary
folder, which it removes). A worker appends the spectrograms of its files to its own shard file in the build
folder (:class:`~.analysis.RawShard`) and sends back only the manifest values, so no spectrogram crosses a pipe
and the building process holds the values of at most ``AHEAD`` files per worker at a time; at the end the
workers normalise the shards' rows into the store (:func:`~.analysis.normalise_rows`), each a part.

A script that builds a store with ``workers > 1`` must start under ``if __name__ == "__main__":``, as for any
"spawn" pool: each worker imports the script's main module.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .analysis import FileAnalysis, RawShard, analyse_file
from .config import ConfigError, SpectrogramConfig
from .errors import UserError

MAX_WORKERS = 256
AHEAD = 4  # tasks in flight per worker: enough to keep each busy while the building process takes results


class WorkerDied(UserError):
    """A worker process ended without finishing its work (killed, or out of memory)."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the OS has one), at least 1."""
    n = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    return max(1, n)


def check_workers(workers: int, what: str = "workers") -> int:
    """``workers`` when it is a whole number from 1 to MAX_WORKERS, else :class:`ConfigError` naming ``what``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"{what} must be a whole number from 1 to {MAX_WORKERS}, got {workers!r}")
    return workers


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_freed_memory()
    import torch

    torch.set_num_threads(1)


def _keep_freed_memory() -> None:
    """With glibc, keep the arrays' freed memory in the worker's heap for the next file instead of handing it
    back to the OS and faulting in fresh zeroed pages (one fault per 4 KiB of each STFT's 10 MB); elsewhere,
    nothing. A worker's memory then stays at its high-water mark, a few hundred MB."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except (OSError, ImportError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters (malloc.h)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks up to 32 MiB come from the heap
    libc.mallopt(m_trim_threshold, 1 << 30)


_SHARDS: dict[str, RawShard] = {}  # in a worker: its shard in each build folder


def analyse_task(path: str, cfg: SpectrogramConfig, folder: str) -> FileAnalysis:
    """In a worker: :func:`~.analysis.analyse_file` into this worker's shard of ``folder``."""
    shard = _SHARDS.get(folder)
    if shard is None:
        shard = _SHARDS[folder] = RawShard(Path(folder) / f"raw-{os.getpid()}.f32")
    return analyse_file(Path(path), cfg, shard)


class Pool:
    """Worker processes for one build. Leaving the block (also by an exception or Ctrl-C) cancels the work
    not started and waits for the workers to end."""

    def __init__(self, workers: int):
        self.workers = check_workers(workers)
        self._ex = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)

    def in_order(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*task)`` for each task, run in the workers, results in the order of ``tasks``. A worker that
        died (killed, out of memory) with work left gives :class:`WorkerDied`."""
        pending: deque[Future] = deque()
        try:
            for task in tasks:
                pending.append(self._ex.submit(fn, *task))
                if len(pending) >= AHEAD * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise WorkerDied("a preprocessing worker process ended before its work was done (killed, or out of "
                             "memory?); nothing was written. Run again, with fewer --workers if memory is "
                             "short") from None
