"""The batch in chunks of frames, solved side by side on worker threads."""
from __future__ import annotations

import os

import numpy as np

from ..._threads import map_chunks
from . import iteration
from .iteration import _solve_frames, step_bound
from .work import _work_sets, bytes_per_frame, trim_kept

CHUNK_ELEMENTS = 1 << 19          # n_freqs x frames per work array: 4 MB of float64
THREAD_CHUNK_ELEMENTS = 1 << 20   # ... when the frames are shared between threads
MIN_CHUNK_ELEMENTS = 1 << 19      # smallest chunk when the frames are shared between threads
CHUNKS_PER_WORKER = 4             # chunks a thread, where the batch is large enough
SCRATCH_BYTES = 64 << 20          # NumPy loop: every thread's work arrays together, at most
COMPILED_CHUNK_ELEMENTS = 1 << 17  # compiled loop: n_freqs x frames of a chunk (1 MB of float64)


def solve(plan, m, *, max_iter, tolerance_loss, tolerance_change):
    """Solve every frame (column) of ``m``; see :func:`solve_into` (this returns float64).

    Parameters
    ----------
    plan : NnlsPlan
    m : ndarray, shape (n_mels, N)
        One mel frame per column, any real dtype (computed in float64); not modified.

    Returns
    -------
    s : ndarray, shape (n_freqs, N), float64
    iterations : ndarray of int64, shape (N,)
    kkt : ndarray, shape (N,)
    """
    m = np.asarray(m)
    s = np.empty((1, plan.sparse.n_freqs, m.shape[1]))
    iterations, kkt = solve_into(plan, m[None], s, max_iter=max_iter,
                                 tolerance_loss=tolerance_loss, tolerance_change=tolerance_change)
    return s[0], iterations[0], kkt[0]


def solve_into(plan, mel, out, *, max_iter, tolerance_loss, tolerance_change, workers=1,
               progress=None, prior=None, scratch=None):
    """Solve every frame of ``mel`` into ``out``, a cache-sized chunk of frames at a time.

    The loop: the compiled one (:mod:`cumel.solvers.nnls.compiled`) where numba imports, else
    the NumPy one (:func:`cumel.solvers.nnls.iteration._solve_frames`); ``CUMEL_CPU`` chooses
    (:func:`compiled_module`).  Both take the same Newton steps.

    Memory: ``out`` is the only array that grows with the batch (besides two numbers a frame);
    each chunk being solved has one set of work arrays (at most ``workers`` sets, allocated once
    per call, or kept in ``scratch`` between calls), into which it gathers its frames (in
    float64), solves them and from which it writes them into ``out`` in ``out.dtype``.  The NumPy
    loop's sets together stay within ``SCRATCH_BYTES`` (smaller chunks for more threads); the
    compiled loop's are a chunk's frames and result.  When the call returns, what is kept (here
    or in ``scratch``) is cut to ``work.KEPT_BYTES``.  Chunks cannot change a result, since no
    operation mixes frames, so neither can the number of threads that solve them, nor which set
    of work arrays a chunk gets.

    Parameters
    ----------
    plan : NnlsPlan
    mel : ndarray, shape (B, n_mels, T)
        Frames ``mel[b, :, t]``, any real dtype and strides; read only.
    out : ndarray, shape (B, n_freqs, T)
        Written, every element; its dtype is the result's.
    max_iter : int
        Newton steps allowed per frame (at most :func:`step_bound` are taken).
    tolerance_loss : float
        A frame stops when ``||F|| <= tolerance_loss * ||m||`` (relative KKT residual; equals
        the relative mel residual for a consistent frame, up to ``EPS_REL``).
    tolerance_change : float
        A frame also stops when its step moves ``t = A.T mu`` by at most
        ``tolerance_change * ||max(t, 0)||`` (no further progress at this precision).
    workers : int
        Threads solving chunks at once (NumPy releases the GIL inside its loops); 1 solves in
        the calling thread.
    progress : callable or None
        Called with the number of frames of each chunk solved (from the worker threads).
    prior : Prior or None
        Solve the proximal variant (package docstring, "Prior") with this centre and spread,
        gathered chunk by chunk like ``mel``; None: the plain problem.
    scratch : dict or None
        Keeps the work arrays between calls of the same plan and shapes (a caller that solves
        again and again, as the ADMM's mel step, holds one dict): fresh multi-megabyte arrays
        cost their page faults on every call.  None: allocated for this call only.

    Returns
    -------
    iterations : ndarray of int64, shape (B, T)
        Newton steps taken per frame.
    kkt : ndarray, shape (B, T)
        Final ``||F|| / ||m||`` per frame (0 for an all-zero frame).
    """
    B, _, T = mel.shape
    cap = min(int(max_iter), step_bound(plan.n_mels))
    iterations = np.zeros((B, T), dtype=np.int64)
    kkt = np.zeros((B, T))
    compiled = compiled_module()
    has_prior = prior is not None
    per_frame = bytes_per_frame(plan, has_prior, compiled is not None)
    if compiled is not None:
        chunks = compiled_chunk_bounds(B * T, plan.sparse.n_freqs, workers)
    else:
        chunks = chunk_bounds(B * T, plan.sparse.n_freqs, workers, uniform=cap == 0)
        # every thread's work arrays together within SCRATCH_BYTES, whatever the threads
        threads = min(workers, len(chunks))
        if chunks and threads * max(b - a for a, b in chunks) * per_frame > SCRATCH_BYTES:
            chunks = chunk_bounds(B * T, plan.sparse.n_freqs, workers, uniform=cap == 0,
                                  max_frames=max(1, SCRATCH_BYTES // (threads * per_frame)))
    if not chunks:
        return iterations, kkt
    capacity = max(b - a for a, b in chunks)
    works = _work_sets(scratch, plan, capacity, has_prior, compiled is not None)
    errors = np.geterr()          # the caller's floating-point error handling, for every thread

    def run(bounds):
        with np.errstate(**errors):
            solve_chunk(bounds)

    def solve_chunk(bounds):
        work = works.take()
        try:
            if compiled is None:
                _solve_chunk(work, bounds)
            else:
                _solve_chunk_compiled(work, bounds)
        finally:
            works.give_back(work)

    def _solve_chunk(work, bounds):
        a, b = bounds
        n = b - a
        m = work.mel_view("m", n)
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            np.copyto(m[:, frames], mel[b_index, :, t0:t1], casting="unsafe")
            if prior is not None:       # bins in the plan's run-major order
                c = work.bin_view("c", n)
                c[:, frames] = prior.center[b_index, :, t0:t1][plan.order]
                v = work.bin_view("v", n)
                if prior.spread is prior.center:
                    np.copyto(v[:, frames], c[:, frames])
                else:
                    v[:, frames] = prior.spread[b_index, :, t0:t1][plan.order]
        s, it, kk = _solve_frames(plan, work, n, cap, tolerance_loss, tolerance_change,
                                  None if prior is None else prior.floor)
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            out[b_index, :, t0:t1] = s[:, frames]
            iterations[b_index, t0:t1] = it[frames]
            kkt[b_index, t0:t1] = kk[frames]
        if progress is not None:
            progress(n)

    def _solve_chunk_compiled(work, bounds):
        # the frames gathered frame-major (a frame's values contiguous, as the loop reads them)
        a, b = bounds
        n = b - a
        m, s = work.m[:n], work.s[:n]
        c, v = work.c[:n], work.v[:n]
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            np.copyto(m[frames], mel[b_index, :, t0:t1].T, casting="unsafe")
            if prior is not None:       # bins in bin order
                np.copyto(c[frames], prior.center[b_index, :, t0:t1].T, casting="unsafe")
                np.copyto(v[frames], prior.spread[b_index, :, t0:t1].T, casting="unsafe")
        lo, _, w_lo, w_hi = plan.w
        compiled.solve_frames(m, s, work.iterations[:n], work.kkt[:n], lo, w_lo, w_hi,
                              plan.sparse.row_start, plan.start_inv_pivot, plan.start_upper_scaled,
                              plan.start_upper, plan.eps, cap, float(tolerance_loss),
                              float(tolerance_change), iteration.FULL_STEP_TIE,
                              iteration.FLOOR_KKT, iteration.FLOOR_RATIO, prior is not None,
                              c, v, 0.0 if prior is None else prior.floor)
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            out[b_index, :, t0:t1] = s[frames].T
            iterations[b_index, t0:t1] = work.iterations[frames]
            kkt[b_index, t0:t1] = work.kkt[frames]
        if progress is not None:
            progress(n)

    try:
        if len(chunks) == 1 or workers <= 1:       # the calling thread: its own error state
            for bounds in chunks:
                solve_chunk(bounds)
        else:
            map_chunks(run, chunks, workers)
    finally:
        trim_kept(scratch)
    return iterations, kkt


def compiled_chunk_bounds(n_frames, n_freqs, workers):
    """Chunks for the compiled loop: at most ``COMPILED_CHUNK_ELEMENTS // n_freqs`` frames, and
    with several threads at least ``CHUNKS_PER_WORKER`` a thread (threads run their chunks truly
    side by side: no GIL to hand over, so small chunks cost nothing and even out the load)."""
    chunk = max(1, COMPILED_CHUNK_ELEMENTS // n_freqs)
    if workers > 1:
        chunk = min(chunk, max(1, -(-n_frames // (CHUNKS_PER_WORKER * workers))))
    return _split(n_frames, -(-n_frames // chunk))


def _split(n_frames, n_chunks):
    """``range(n_frames)`` in ``n_chunks`` near-equal runs (integer arithmetic: a call that
    solves a frame or two, as a stream's push, pays nothing here)."""
    if n_chunks <= 1:
        return [(0, n_frames)] if n_frames > 0 else []
    edges = [n_frames * i // n_chunks for i in range(n_chunks + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


_COMPILED = {}                    # the choice of CUMEL_CPU -> the compiled module or None
_ANNOUNCED = []                   # the cold compile already announced in this process


def announce_compile(write, also=()):
    """``write(note)`` once a process, before the first solve, where the compiled loop will run
    and numba's cache does not hold it (or one of the modules ``also``, each with an
    ``is_cached()``, as the stream's compiled passes) yet: the first call then compiles it,
    seconds.  For programs with a user at a terminal (the CLI and its demo)."""
    compiled = compiled_module()
    if (compiled is None or _ANNOUNCED
            or (compiled.is_cached() and all(module.is_cached() for module in also))):
        return False
    _ANNOUNCED.append(True)
    write(compiled.COLD_COMPILE_NOTE)
    return True


def compiled_module():
    """The compiled loop's module (:mod:`cumel.solvers.nnls.compiled`), or None for the NumPy
    loop: ``CUMEL_CPU`` unset (or ``auto``) takes the compiled loop where numba imports,
    ``numpy`` the NumPy loop, ``numba`` the compiled loop or an ImportError saying why not."""
    choice = os.environ.get("CUMEL_CPU", "").strip().lower() or "auto"
    if choice not in ("auto", "numpy", "numba"):
        raise ValueError(f"CUMEL_CPU must be 'numpy', 'numba' or 'auto' (or unset), got "
                         f"{os.environ.get('CUMEL_CPU')!r}")
    if choice == "numpy":
        return None
    if choice not in _COMPILED:
        try:
            from . import compiled
        except Exception as exc:          # numba absent, or one that does not import here
            _COMPILED["failed"] = exc
            compiled = None
        _COMPILED[choice] = _COMPILED["auto"] = compiled
    if _COMPILED[choice] is None and choice == "numba":
        raise ImportError(f"CUMEL_CPU=numba, but numba does not import "
                          f"({_COMPILED.get('failed')!r}); install it with pip install "
                          f"'cumel[cpu]', or unset CUMEL_CPU for the NumPy loop")
    return _COMPILED[choice]




def _slabs(a, b, T):
    """Frames ``a <= f < b`` of a (B, ., T) batch (f = b T + t) as runs within one batch item:
    ``(slice of the chunk's columns, b, t0, t1)``."""
    f = a
    while f < b:
        b_index, t0 = divmod(f, T)
        t1 = min(T, t0 + (b - f))
        yield slice(f - a, f - a + t1 - t0), b_index, t0, t1
        f += t1 - t0


def chunk_bounds(n_frames, n_freqs, workers, uniform=False, max_frames=None):
    """``[(start, stop), ...]``: near-equal runs of frames, at most ``CHUNK_ELEMENTS // n_freqs``
    a chunk; with several threads, at most ``THREAD_CHUNK_ELEMENTS // n_freqs`` and at least
    ``CHUNKS_PER_WORKER`` chunks a thread where that leaves ``MIN_CHUNK_ELEMENTS`` a chunk (frames
    differ in cost: several chunks a thread even out the load; but a smaller chunk makes every
    NumPy call shorter, and threads hand the GIL back and forth around every call: measured, a
    clip of a few hundred frames split between two threads ran slower than on one, so a batch
    smaller than two chunks runs in the calling thread, and threads get twice the chunk of one
    thread, which ran 2-11 % faster on two threads than the single thread's chunk).  With
    several threads and more chunks than threads, the number of chunks is a multiple of
    ``workers`` (13 chunks on two threads left one thread the last chunk alone, 1/13 of the
    batch; 14 slightly smaller ones ran about 5 % faster).
    ``uniform``: every frame costs the same (no Newton step, ``max_iter = 0``), so one chunk a
    thread is enough, however small."""
    chunk = max(1, CHUNK_ELEMENTS // n_freqs)
    if workers > 1 and uniform:
        chunk = min(chunk, max(1, -(-n_frames // workers)))
    elif workers > 1:
        smallest = max(1, MIN_CHUNK_ELEMENTS // n_freqs)
        chunk = max(1, THREAD_CHUNK_ELEMENTS // n_freqs)
        chunk = min(chunk, max(smallest, -(-n_frames // (CHUNKS_PER_WORKER * workers))))
    if max_frames is not None:
        chunk = min(chunk, max_frames)
    n_chunks = -(-n_frames // chunk)
    if workers > 1 and not uniform and n_chunks > workers:
        n_chunks = -(-n_chunks // workers) * workers
    return _split(n_frames, n_chunks)
