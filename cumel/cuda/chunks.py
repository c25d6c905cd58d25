"""Chunking and the entry points: a batch cut into slabs that fit, solved on the device.

nnls and lstsq solve frames independently (their launches: :mod:`cumel.cuda.nnls`,
:mod:`cumel.cuda.lstsq`), so a batch is cut into chunks that fit the device (``max_device_bytes``,
the free memory); on ``OutOfMemoryError`` CuPy's cached blocks are freed and the chunk halved.
:func:`solve` (device input) runs the chunks on CuPy's current stream; :func:`solve_host` (host
input) streams them through the device on :data:`STREAMS` streams of its own (copy in, solve,
copy out through pinned buffers). The SGD solvers couple the batch and go to
:mod:`cumel.cuda.sgd` whole.
"""
from __future__ import annotations

import numpy as np

from . import lstsq, memory, nnls, sgd

# the solvers whose frames are independent, and the module that launches a slab of them
SLAB_SOLVERS = {"nnls": nnls, "lstsq": lstsq}
WHOLE_BATCH_SOLVERS = ("torchaudio", "mindspore")

# Streaming. Two chunks in flight (one copying while the other solves).
STREAMS = 2
# A host chunk also moves at most this many bytes in and out: chunks of a few tens of MB keep
# the copies of one chunk overlapping the solve of the other even when the whole batch would fit
# (one huge chunk would copy, solve and copy back in sequence).
CHUNK_TARGET_BYTES = 64 * 2 ** 20


def chunk_slabs(B, T, start, chunk):
    """Cut frames ``start ..`` of a (B, ., T) batch (frame f = b T + t) into slabs of at most
    ``chunk`` frames: whole channels ``(b0, b1, 0, T)`` when a chunk holds at least one channel,
    else runs of one channel ``(b, b + 1, t0, t1)``. Yields ``(b0, b1, t0, t1)`` in frame order.
    """
    f, end = int(start), int(B) * int(T)
    while f < end:
        b, t = divmod(f, T)
        if t == 0 and chunk >= T:
            nb = min(chunk // T, B - b)
            yield b, b + nb, 0, T
            f += nb * T
        else:
            nt = min(chunk, T - t)
            yield b, b + 1, t, t + nt
            f += nt


def frames_per_chunk(transform, dtype, budget, host):
    """Frames one chunk may hold within ``budget`` bytes (at least 1)."""
    item = np.dtype(dtype).itemsize
    n_mels, n_freqs = transform.n_mels, transform.n_stft
    scratch = SLAB_SOLVERS[transform.solver].SCRATCH_BYTES_PER_FRAME
    if not host:
        return max(1, budget // scratch)
    transfer = (n_mels + n_freqs) * item
    return max(1, min(budget // ((scratch + transfer) * STREAMS), CHUNK_TARGET_BYTES // transfer))


# -- entry points -------------------------------------------------------------------------------

def solve(transform, packed, out=None):
    """Run ``transform``'s solver on a CuPy batch, on the current device and stream.

    Parameters
    ----------
    transform : cumel.InverseMelScale
    packed : cupy.ndarray, shape (B, n_mels, T), float32 or float64
        Any strides.
    out : cupy.ndarray, shape (B, n_stft, T), optional
        Where to write the result (any strides; the tests poison it to prove full coverage).

    Returns
    -------
    S : cupy.ndarray, shape (B, n_stft, T), ``packed.dtype``
    iterations : cupy.ndarray of int64, shape (B, T)
    kkt : cupy.ndarray of float64, shape (B, T), or None
        nnls: each frame's final relative KKT residual; None for the other solvers.

    Raises
    ------
    DeviceMemoryError
        The output (or, for the SGD solvers, the whole batch's state) does not fit.
    DeviceLimitError
        One frame needs more shared memory than the device has (nnls at very many mels).
    """
    import cupy
    B, _, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    if transform.solver in WHOLE_BATCH_SOLVERS:
        sgd.check_fits(transform, B * T, dtype, 0)
        return sgd.solve_retrying(transform, packed, out)
    slab_solver = SLAB_SOLVERS[transform.solver]
    S = memory.output(out, (B, n_freqs, T), dtype)
    iterations = memory.allocate(cupy.empty, (B, T), np.int64, "the iteration counts")
    kkt = memory.allocate(cupy.empty, (B, T), np.float64, "the KKT residuals")
    budget, _ = memory.budget(transform)
    chunk = frames_per_chunk(transform, dtype, budget, host=False)
    oom = memory.OomNotice()
    start = 0
    while start < B * T:
        try:
            for b0, b1, t0, t1 in chunk_slabs(B, T, start, chunk):
                slab_solver.solve_slab(transform, packed[b0:b1, :, t0:t1], S[b0:b1, :, t0:t1],
                                       iterations[b0:b1, t0:t1], kkt[b0:b1, t0:t1])
                start = b1 * T if t1 == T else b0 * T + t1
        except memory.oom_type() as exc:
            chunk = oom(chunk, exc)
    return S, iterations, (kkt if transform.solver == "nnls" else None)


class _Slot:
    """One chunk in flight: a stream, pinned host buffers and device buffers of ``chunk`` frames."""

    def __init__(self, cupy, transform, dtype, chunk):
        n_mels, n_freqs = transform.n_mels, transform.n_stft
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.host_in = self._pinned(cupy, chunk * n_mels, dtype)
        self.host_out = self._pinned(cupy, chunk * n_freqs, dtype)
        self.host_iter = self._pinned(cupy, chunk, np.int64)
        self.host_kkt = self._pinned(cupy, chunk, np.float64)
        self.dev_in = cupy.empty(chunk * n_mels, dtype)
        self.dev_out = cupy.empty(chunk * n_freqs, dtype)
        self.dev_iter = cupy.empty(chunk, np.int64)
        self.dev_kkt = cupy.empty(chunk, np.float64)
        self.pending = None          # (slab, event) of the chunk this slot holds

    @staticmethod
    def _pinned(cupy, count, dtype):
        # pinned (page-locked) memory lets the copies run asynchronously on the slot's stream
        mem = cupy.cuda.alloc_pinned_memory(max(1, count) * np.dtype(dtype).itemsize)
        return np.ndarray((count,), dtype, buffer=mem)     # keeps ``mem`` alive as its base


def solve_host(transform, packed, out=None):
    """Solve a host (NumPy) batch on the current device, streaming it through in chunks.

    nnls and lstsq frames are independent: the batch is cut into chunks that fit the device
    (:func:`frames_per_chunk`, ``transform.max_device_bytes``) and pipelined on two CuPy streams
    (copy in, solve, copy out through pinned buffers), so a batch far larger than the device
    streams through. Results do not depend on the chunk size (each frame's arithmetic is its
    own). On ``OutOfMemoryError`` CuPy's cached blocks are freed, the chunk halved and the
    stream resumed, with one warning. The SGD solvers take the whole batch at once after
    :func:`cumel.cuda.sgd.check_fits`.

    Parameters
    ----------
    transform : cumel.InverseMelScale
    packed : numpy.ndarray, shape (B, n_mels, T), float32 or float64
    out : numpy.ndarray, shape (B, n_stft, T), optional
        Host array to write into (any strides).

    Returns
    -------
    S : numpy.ndarray (``out`` when given)
    iterations : numpy.ndarray of int64, shape (B, T)
    kkt : numpy.ndarray of float64, shape (B, T), or None (as :func:`solve`)
    """
    import cupy
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    S = np.empty((B, n_freqs, T), dtype) if out is None else out
    if transform.solver in WHOLE_BATCH_SOLVERS:
        sgd.check_fits(transform, B * T, dtype, packed.nbytes)
        batch = memory.allocate(lambda shape, dtype: cupy.asarray(packed), packed.shape, dtype,
                                "the batch")
        S_dev, it_dev, _ = sgd.solve_retrying(transform, batch, None)
        S[...] = S_dev.get()
        return S, np.asarray(it_dev.get()), None
    slab_solver = SLAB_SOLVERS[transform.solver]
    iterations = np.empty((B, T), np.int64)
    kkt = np.empty((B, T), np.float64)
    _prepare(slab_solver, transform, dtype)
    budget, _ = memory.budget(transform)
    chunk = min(B * T, frames_per_chunk(transform, dtype, budget, host=True))
    oom = memory.OomNotice()
    done = 0                                  # frames whose results are in S
    while done < B * T:
        slots = []
        try:
            slots = [_Slot(cupy, transform, dtype, chunk) for _ in range(STREAMS)]
            for i, slab in enumerate(chunk_slabs(B, T, done, chunk)):
                slot = slots[i % STREAMS]
                done = _harvest(slot, S, iterations, kkt, T, done)     # frees the slot's buffers
                b0, b1, t0, t1 = slab
                shape = (b1 - b0, n_mels, t1 - t0)
                n = shape[0] * shape[2]
                host_in = slot.host_in[:n * n_mels].reshape(shape)
                np.copyto(host_in, packed[b0:b1, :, t0:t1])
                with slot.stream:
                    dev_in = slot.dev_in[:n * n_mels].reshape(shape)
                    dev_in.set(host_in, stream=slot.stream)
                    dev_out = slot.dev_out[:n * n_freqs].reshape(shape[0], n_freqs, shape[2])
                    dev_iter = slot.dev_iter[:n].reshape(shape[0], shape[2])
                    dev_kkt = slot.dev_kkt[:n].reshape(shape[0], shape[2])
                    slab_solver.solve_slab(transform, dev_in, dev_out, dev_iter, dev_kkt)
                    dev_out.get(stream=slot.stream,
                                out=slot.host_out[:n * n_freqs].reshape(dev_out.shape))
                    dev_iter.get(stream=slot.stream, out=slot.host_iter[:n].reshape(dev_iter.shape))
                    dev_kkt.get(stream=slot.stream, out=slot.host_kkt[:n].reshape(dev_kkt.shape))
                    slot.pending = (slab, slot.stream.record())
            done = _drain(slots, S, iterations, kkt, T, done)
        except memory.oom_type() as exc:
            # chunks already queued complete: keep them, resume after the last one (after every
            # stream is idle, so no copy still uses a buffer about to be dropped)
            for slot in slots:
                slot.stream.synchronize()
            done = _drain(slots, S, iterations, kkt, T, done)
            slots.clear()
            chunk = oom(chunk, exc)
    return S, iterations, (kkt if transform.solver == "nnls" else None)


def _prepare(slab_solver, transform, dtype):
    """Build the device constants and compile the kernel on the current stream, and wait for
    them: the chunk streams then only read them (no upload racing a kernel on another stream)."""
    import cupy
    slab_solver.prepare(transform, dtype)
    cupy.cuda.get_current_stream().synchronize()


def _harvest(slot, S, iterations, kkt, T, done):
    """Wait for ``slot``'s chunk and copy it from pinned memory into the result."""
    if slot.pending is None:
        return done
    (b0, b1, t0, t1), event = slot.pending
    slot.pending = None
    event.synchronize()
    n_freqs = S.shape[1]
    nb, nt = b1 - b0, t1 - t0
    S[b0:b1, :, t0:t1] = slot.host_out[:nb * n_freqs * nt].reshape(nb, n_freqs, nt)
    iterations[b0:b1, t0:t1] = slot.host_iter[:nb * nt].reshape(nb, nt)
    kkt[b0:b1, t0:t1] = slot.host_kkt[:nb * nt].reshape(nb, nt)
    return max(done, b1 * T if t1 == T else b0 * T + t1)


def _drain(slots, S, iterations, kkt, T, done):
    """Harvest every pending chunk, oldest first."""
    pending = sorted((s for s in slots if s.pending is not None), key=lambda s: s.pending[0])
    for slot in pending:
        done = _harvest(slot, S, iterations, kkt, T, done)
    return done
