"""Worker processes (each solving whole files) and the signals that stop a run."""
from __future__ import annotations

import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .solve import solve_file


def _ignore_sigint():
    # workers finish the file in hand; the parent decides what stops (Ctrl-C reaches them too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _mp_context():
    """"forkserver" where there is one: workers fork from a clean single-threaded server that
    has imported cumel once (no fork of a process holding threads, such as a progress bar's or
    a Dask client's; fast start); the platform's default elsewhere."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cumel._bulk"])
    return ctx


def run_parallel(jobs, settings, n_workers, record):
    """Solve each job in one of ``n_workers`` processes (each builds its transforms once),
    calling ``record(result)`` as files finish. On an interrupt, pending files are cancelled, the
    ones in hand finish (each output is complete or absent) and are recorded, and the interrupt
    is re-raised."""
    executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context(),
                                   initializer=_ignore_sigint)
    futures, reported = [], set()
    try:
        futures = [executor.submit(solve_file, job, settings) for job in jobs]
        todo = set(futures)
        while todo:
            done, todo = wait(todo, return_when=FIRST_COMPLETED)
            for fut in done:
                reported.add(fut)
                record(fut.result())
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # a second Ctrl-C must not cut the clean-up
        executor.shutdown(wait=True, cancel_futures=True)
        for fut in futures:
            if fut not in reported and fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut.result())
        raise
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
