"""Worker processes (each solving whole files) and the signals that stop a run.

Signals. SIGINT (Ctrl-C) and SIGTERM (what ``timeout``, systemd, Kubernetes and batch
schedulers send) raise :class:`Interrupted` in the main thread, once: the run stops taking
files, the files in hand finish (complete outputs) or leave nothing, and the summary and report
say what was not run; the exit status is 128 + the signal number (130, 143). A second signal
during that clean-up is ignored. A signal that was ignored when the run began stays ignored.
A signal that arrives while an output is being put in place and recorded
(:func:`.atomic.committing`) is raised once the record is made, so a complete output is
always counted written.

Workers. They come from a "forkserver" (one clean single-threaded process that has imported
cumel once) and ignore SIGINT and SIGTERM themselves, as does the forkserver
(:mod:`.forkserver`): the parent decides what stops, and a signal sent to the whole process
group does not cut a file in hand. They must not outlive the
parent, whatever kills it (SIGKILL included), and the kernel's parent-death signal cannot say
so: a worker's parent is the forkserver, not the run. Each worker therefore holds the read end
of a pipe whose only write end the parent holds; when the parent dies, for any reason, the
kernel closes that end, the worker's watcher thread reads end-of-file, removes the worker's
temporary files and exits at once. The forkserver exits by itself once the parent and every
worker are gone (it reads end-of-file on its own "alive" pipe, whose write ends they hold).

Progress. With a progress bar, each worker posts the frames solved so far of the file in hand to
its own slot of a small shared-memory array (:class:`_Solved`); the parent reads the slots
while it waits for results, so the bar moves within large files here too.

A worker that dies (the kernel's out-of-memory killer, a crash in a native library) breaks the
pool: the files it could have been solving are then solved again one at a time, each in a
fresh single-worker pool, so that the one that kills its worker fails alone, and the rest go on
in a new pool.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from . import atomic
from .report import Result
from .solve import failure, solve_file

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.2        # how often the parent reads the workers' solved frames (the bar's pace)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived (SIGINT or SIGTERM): ``signum`` says which. A KeyboardInterrupt,
    so that everything that cleans up after Ctrl-C cleans up after SIGTERM too."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_of(exc):
    """The signal number behind an interrupt (SIGINT for a plain KeyboardInterrupt)."""
    return int(getattr(exc, "signum", signal.SIGINT))


def exit_status(exc):
    """128 + the signal number of an interrupt: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + signal_of(exc)


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while this is entered,
    the first one only: later ones are ignored until it exits. Signals found ignored are left
    so (a background job's SIGINT); outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            interrupt = Interrupted(signum)
            if not atomic.defer(interrupt):       # an output being put in place and recorded
                raise interrupt

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -- worker processes ----------------------------------------------------------------------------

def _worker_start(parent_alive, solved=None):
    """First thing in each worker: ignore the stop signals, die with the parent, and take a
    slot of ``solved`` (when the parent shows progress)."""
    global _SLOT
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_die_with_parent, args=(parent_alive,), daemon=True,
                     name="cumel-parent-watch").start()
    _SLOT = None if solved is None else solved.claim()


_SLOT = None              # in a worker: its slot of the pool's _Solved, or None


class _Solved:
    """Frames solved so far of the file each worker has in hand, in shared memory.

    Slot ``i`` is three integers: the serial number of the worker's job plus one (0: none
    yet), the frames solved and the frames of the file. Only worker ``i`` writes it (its solver
    threads under a lock of its own); the parent reads it without a lock. A worker starting a
    file clears the counts before it writes the new serial, and the parent reads the serial
    before and after the counts and skips a slot whose serial changed in between: a count it
    reads belongs to the serial it reads (the bar also never moves back).
    """

    def __init__(self, ctx, n_workers):
        self.slots = ctx.RawArray("q", 3 * n_workers)
        self.claimed = ctx.Value("i", 0)
        self.n_workers = n_workers
        self.index = None

    def claim(self):
        """In a worker: take the next free slot (this object, bound to it)."""
        with self.claimed.get_lock():
            self.index = self.claimed.value
            self.claimed.value += 1
        return self if self.index < self.n_workers else None

    def reporter(self, serial):
        """In a worker, for job ``serial``: the ``progress(frames, files)`` of
        :func:`.solve.solve_file`, counting into this worker's slot."""
        slots, base, lock = self.slots, 3 * self.index, threading.Lock()
        slots[base + 1] = slots[base + 2] = 0
        slots[base] = serial + 1

        def within(frames, files=1):
            slots[base + 2] = int(frames)

            def advance(n):
                with lock:
                    slots[base + 1] += int(n)

            return advance

        return within

    def poll(self, jobs, finished, progress):
        """In the parent: tell ``progress`` the solved frames of each job in hand (not in
        ``finished``, the serials already recorded)."""
        slots = self.slots
        for base in range(0, 3 * self.n_workers, 3):
            serial = slots[base] - 1
            solved, total = slots[base + 1], slots[base + 2]
            if serial < 0 or slots[base] - 1 != serial or serial in finished:
                continue
            progress.solved(jobs[serial].input, solved, total)


def _solve_reporting(solve, job, settings, serial):
    """In a worker: ``solve(job, settings)``, reporting its solved frames to this worker's
    slot when the parent shows progress."""
    if _SLOT is None:
        return solve(job, settings)
    return solve(job, settings, _SLOT.reporter(serial))


def _die_with_parent(parent_alive):
    """Block until the parent's end of the pipe closes (the parent never writes), then leave
    nothing behind and exit at once."""
    try:
        while True:
            parent_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    atomic.abandon()
    os._exit(1)


def _mp_context():
    """"forkserver" where there is one: workers fork from a clean single-threaded server that
    has imported cumel once (no fork of a process holding threads, such as a progress bar's or
    a Dask client's; fast start); the platform's default elsewhere."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cumel._bulk.forkserver"])   # cumel, and SIGTERM ignored there
    return ctx


class _Pool:
    """A process pool whose workers die with this process (see the module docstring)."""

    def __init__(self, n_workers, progress=False):
        ctx = _mp_context()
        self._alive_r, self._alive_w = ctx.Pipe(duplex=False)
        self.solved = _Solved(ctx, n_workers) if progress else None
        self.executor = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                            initializer=_worker_start,
                                            initargs=(self._alive_r, self.solved))

    def close(self, cancel=False, broken=False):
        """Wait for the files in hand (cancelling the others with ``cancel``), then let go.

        A ``broken`` pool's results are lost anyway, and its workers ignore the SIGTERM the
        executor sends them to stop (a queue's lock may be held by the dead one): they are
        told the parent is gone (the pipe closed) before the executor waits for them.
        """
        try:
            if broken:
                self._alive_w.close()
            self.executor.shutdown(wait=True, cancel_futures=cancel)
        finally:
            self._alive_w.close()
            self._alive_r.close()


def run_parallel(jobs, settings, n_workers, record, solve=solve_file, progress=None):
    """Solve each job in one of ``n_workers`` processes (each builds its transforms once),
    calling ``record(result)`` as files finish.

    ``progress``: a :class:`.progress.Progress` told the solved frames of the files in hand
    (``solve`` is then called with a third argument, the ``progress(frames, files)`` of
    :func:`.solve.solve_file`), or None.

    On an interrupt, pending files are cancelled, the ones in hand finish (each output is
    complete or absent) and are recorded, and the interrupt is re-raised. A worker that dies
    fails the file it was solving alone (found by solving the suspects one at a time); the
    other files go on.
    """
    todo = list(jobs)
    while todo:
        todo = _run_pool(todo, settings, min(n_workers, len(todo)), record, solve, progress)
        if not todo:
            break
        # the pool broke: a file being solved killed its worker. Files are taken in order, so
        # it is among the first n_workers unfinished; solve those alone, then go on
        suspects, todo = todo[:n_workers], todo[n_workers:]
        for job in suspects:
            if not _run_pool([job], settings, 1, record, solve, progress):
                continue
            record(Result(job.input, job.output, "failed",
                          error=f"{job.input}: the worker process solving it died (killed by the "
                                "system, e.g. out of memory, or a crash); nothing was written"))


def _run_pool(jobs, settings, n_workers, record, solve, progress=None):
    """Run ``jobs`` in one pool; returns the jobs not finished when the pool broke ([] when
    none did)."""
    pool = _Pool(n_workers, progress is not None)
    futures, reported, finished = {}, set(), set()
    try:
        for serial, job in enumerate(jobs):
            futures[pool.executor.submit(_solve_reporting, solve, job, settings, serial)] = serial
        todo = set(futures)
        while todo:
            done, todo = wait(todo, timeout=None if pool.solved is None else POLL_SECONDS,
                              return_when=FIRST_COMPLETED)
            broken = False
            for fut in [f for f in futures if f in done]:            # in submission order
                if _is_broken(fut):
                    broken = True
                else:
                    with atomic.committing():        # reported is recorded
                        reported.add(fut)
                        finished.add(futures[fut])
                        record(_result(fut, jobs[futures[fut]]))
            if broken:
                break
            if pool.solved is not None:
                pool.solved.poll(jobs, finished, progress)
    except BaseException:
        pool.close(cancel=True, broken=_broken(futures))      # the files in hand finish
        _record_finished(futures, jobs, reported, record)
        raise
    pool.close(cancel=True, broken=_broken(futures))
    _record_finished(futures, jobs, reported, record)   # finished while the pool was breaking
    return [jobs[serial] for fut, serial in futures.items() if fut not in reported]


def _is_broken(fut):
    return fut.done() and not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool)


def _broken(futures):
    return any(_is_broken(fut) for fut in futures)


def _record_finished(futures, jobs, reported, record):
    for fut, serial in futures.items():
        if fut not in reported and fut.done() and not fut.cancelled() and not _is_broken(fut):
            with atomic.committing():
                reported.add(fut)
                record(_result(fut, jobs[serial]))


def _result(fut, job):
    """The future's :class:`Result`; a file whose result could not come back (an exception
    that escaped ``solve``, an unpicklable value) failed."""
    exc = fut.exception()
    return fut.result() if exc is None else failure(job, exc)
