"""Worker threads for the CPU path: how many, and running independent chunks on them.

NumPy releases the GIL inside its loops, so threads over independent chunks of frames use every
core without copying the batch to other processes. The chunks never share an output element, so
the result's bits do not depend on the number of threads.
"""
from __future__ import annotations

import itertools
import numbers
import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["usable_cpus", "check_workers", "resolve_workers", "map_chunks", "Runner", "ranges"]


def usable_cpus():
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return max(1, count or 1)


def check_workers(workers, name="workers"):
    """``None`` or an integer >= 1 (``scipy.fft``'s ``workers`` spelling); anything else raises
    a ValueError naming the parameter and the value."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"{name} must be None (every usable core) or an integer >= 1, "
                         f"got {workers!r}")
    return int(workers)


def resolve_workers(workers):
    """Threads to use: ``None`` -> every usable core, else ``workers`` (already checked)."""
    return usable_cpus() if workers is None else workers


def map_chunks(fn, chunks, workers):
    """``fn(chunk)`` for every chunk, on up to ``workers`` threads: the calling thread and
    ``workers - 1`` of a pool kept for the process (starting threads cost about a millisecond a
    call, a tenth of a short clip's solve), each taking the next chunk in order until none is
    left (a thread that drew cheap chunks takes more: the load evens out).  One worker or one
    chunk: the calling thread alone.  The first exception raised by a chunk is re-raised once
    every running chunk has returned; no chunk starts after it."""
    chunks = list(chunks)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            fn(chunk)
        return
    order = itertools.count()         # next() on it is atomic under the GIL
    failed = []

    def drain():
        while not failed:
            index = next(order)
            if index >= len(chunks):
                return
            try:
                fn(chunks[index])
            except BaseException as exc:
                failed.append((index, exc))
                return

    helpers = [_pool(workers - 1).submit(drain) for _ in range(min(workers, len(chunks)) - 1)]
    try:
        drain()
    finally:
        for future in helpers:
            future.result()
    if failed:
        raise min(failed, key=lambda item: item[0])[1]


_POOL: dict = {}                      # the process's helper threads: pid, size, executor


def _pool(size):
    """The process's pool of at least ``size`` helper threads (made anew after a fork: the
    parent's threads do not exist in the child)."""
    pid = os.getpid()
    if _POOL.get("pid") != pid or _POOL["size"] < size:
        _POOL.update(pid=pid, size=size,
                     executor=ThreadPoolExecutor(max_workers=size, thread_name_prefix="cumel"))
    return _POOL["executor"]


def ranges(n, parts):
    """``[(start, stop), ...]``: ``range(n)`` in at most ``parts`` near-equal runs."""
    parts = max(1, min(int(parts), n))
    edges = [n * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class Runner:
    """Runs ``fn(a, b)`` over near-equal ranges of ``n`` items on one pool of ``workers`` threads
    kept for the life of the ``with`` block (an iterative method calls it many times); with one
    worker, or too few items to share, in the calling thread."""

    def __init__(self, workers, minimum=1):
        self.workers = max(1, int(workers))
        self.minimum = max(1, int(minimum))      # items a thread needs to be worth starting
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cumel")
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def __call__(self, fn, n):
        parts = ranges(n, min(self.workers, n // self.minimum)) if self.pool is not None else []
        if len(parts) <= 1:
            fn(0, n)
            return
        for future in [self.pool.submit(fn, a, b) for a, b in parts]:
            future.result()
