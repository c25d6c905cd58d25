"""Worker threads for the CPU path: how many, and running independent chunks on them.

NumPy releases the GIL inside its loops, so threads over independent chunks of frames use every
core without copying the batch to other processes. The chunks never share an output element, so
the result's bits do not depend on the number of threads.
"""
from __future__ import annotations

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
    """``fn(chunk)`` for every chunk, on up to ``workers`` threads (the calling thread alone for
    one worker or one chunk); the first exception raised by any chunk is re-raised."""
    chunks = list(chunks)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            fn(chunk)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks)),
                            thread_name_prefix="cumel") as pool:
        for future in [pool.submit(fn, chunk) for chunk in chunks]:
            future.result()


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
