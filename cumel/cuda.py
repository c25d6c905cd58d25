"""GPU backend: the CUDA kernels of ``kernels/`` driven through CuPy.

* Sources ship inside the package (``cumel.kernels``) and are compiled by NVRTC through
  ``cupy.RawModule`` once per process and device (``functools.lru_cache``); the name expressions
  below are every instantiation, and the CI compile test uses this very table. The code handed
  to NVRTC has every ``#include "..."`` of ``kernels/`` inlined (:func:`module_code`): CuPy's
  on-disk cache is keyed on the code string, so a change to ``common.cuh`` alone recompiles.
* Device copies of the per-filterbank constants hang off the transform's :class:`Plan`, built on
  first use per device and dtype. Everything runs on the current device: the caller
  (``InverseMelScale.__call__``) enters the input's device first.
* The SGD starts are generated on the host by the same code as the CPU path
  (``InverseMelScale.start``, ``cumel._random``), so a seed gives the same start on both.
* All work is queued on CuPy's current stream. :func:`solve` (device input) synchronises with
  the host only to poll the SGD solvers' stop flag between launches; :func:`solve_host` (host
  input) streams chunks through the device on two streams of its own.
* nnls and lstsq solve frames independently, so a batch is cut into chunks that fit the device
  (``max_device_bytes``, the free memory); on ``OutOfMemoryError`` CuPy's cached blocks are freed
  and the chunk halved. The SGD solvers couple the batch (torchaudio's loss is global): their
  need is checked up front and a clear :class:`DeviceMemoryError` raised when it does not fit.

CuPy is imported inside the functions: importing this module without CuPy is harmless.
"""
from __future__ import annotations

import functools
import math
import re
import threading
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from . import _backend
from .solvers.nnls import step_bound

# (source file, cooperative launch?) -> the instantiations compiled from it
KERNELS = {
    ("nnls.cu", False): ("nnls_solve<float>", "nnls_solve<double>"),
    ("lstsq.cu", False): ("lstsq_apply<float>", "lstsq_apply<double>"),
    ("sgd.cu", True): ("torchaudio_sgd<float>", "torchaudio_sgd<double>"),
    ("sgd.cu", False): ("torchaudio_sgd<float>", "torchaudio_sgd<double>",
                        "mindspore_gd<float>", "mindspore_gd<double>"),
    ("griffinlim.cu", False): ("griffinlim_update<float>", "griffinlim_update<double>"),
}
CXX_OPTIONS = ("-std=c++17",)
WARPS_PER_BLOCK = 4          # 128 threads: one warp per frame
SHARED_LIMIT = 48 * 1024     # bytes of shared memory a block gets without an opt-in
STATIC_SHARED = 512          # static shared memory a kernel may declare (sgd.cu: 33 doubles);
                             # it counts against the same per-block limits as the dynamic part

# Streaming. Two chunks in flight (one copying while the other solves); a chunk may take this
# fraction of the memory free on the device (CuPy's own cached blocks count as free).
STREAMS = 2
DEVICE_FRACTION = 0.8
# A host chunk also moves at most this many bytes in and out: chunks of a few tens of MB keep
# the copies of one chunk overlapping the solve of the other even when the whole batch would fit
# (one huge chunk would copy, solve and copy back in sequence).
CHUNK_TARGET_BYTES = 64 * 2 ** 20

# SGD launches. One launch runs a bounded number of iterations so that it stays well under a
# desktop GPU's display watchdog (~2 s): the budget assumes a slow card (BANDWIDTH_FLOOR bytes/s
# of state traffic, LAUNCH_OVERHEAD seconds of barrier and reduction per iteration) and aims at
# LAUNCH_SECONDS. A fast card then simply finishes a launch sooner.
LAUNCH_SECONDS = 0.1
BANDWIDTH_FLOOR = 5e10
LAUNCH_OVERHEAD = 1e-5
ITERATIONS_PER_LAUNCH = None   # tests force a budget here; None: computed from the work size


class DeviceMemoryError(MemoryError):
    """The work cannot fit the device's memory (or ``max_device_bytes``)."""


class DeviceLimitError(RuntimeError):
    """The shape needs more than the device offers (shared memory per block)."""


def kernel_dir():
    """Folder holding the ``.cu`` sources: the installed ``cumel.kernels`` package, or the
    source tree's ``kernels/`` when cumel runs uninstalled (``PYTHONPATH=.``)."""
    try:
        return resources.files("cumel.kernels")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "kernels"


def kernel_source(name):
    return kernel_dir().joinpath(name).read_text()


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r'^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$', re.M)


def module_code(name):
    """The code handed to NVRTC for ``kernels/name``: the source with every quoted include of
    ``kernels/`` inlined, once each (what ``#pragma once`` would do).

    CuPy keys its compiled-kernel cache (in memory and on disk) on this string, so inlining makes
    the key cover every file the kernel is built from: a change to ``common.cuh`` alone can no
    longer reuse a stale binary. System includes (``<cooperative_groups.h>``) stay includes.
    """
    seen = set()

    def expand(file_name):
        if file_name in seen:
            return f"// cumel: {file_name} already inlined above\n"
        seen.add(file_name)
        text = _PRAGMA_ONCE.sub("", kernel_source(file_name))
        return _LOCAL_INCLUDE.sub(lambda m: (f"// ---- cumel: inlined {m.group(1)} ----\n"
                                             + expand(m.group(1))
                                             + f"// ---- cumel: end of {m.group(1)} ----"), text)

    return expand(name)


def compile_options():
    """NVRTC options used at run time (and by the CI compile test, plus its -arch)."""
    return CXX_OPTIONS + (f"-I{kernel_dir()}",)


@functools.lru_cache(maxsize=None)
def _module(source_name, cooperative, device_id):
    import cupy
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=module_code(source_name), options=compile_options(),
                                name_expressions=KERNELS[(source_name, cooperative)],
                                enable_cooperative_groups=cooperative)
        module.compile()
    return module


_compile_lock = threading.Lock()   # two threads asking for the same kernel compile it once


def _kernel(source_name, cooperative, name):
    import cupy
    with _compile_lock:
        return _kernel_on(source_name, cooperative, name, _backend.device_id(cupy))


@functools.lru_cache(maxsize=None)
def _kernel_on(source_name, cooperative, name, device_id):
    return _module(source_name, cooperative, device_id).get_function(name)


def _ctype(dtype):
    return "double" if np.dtype(dtype) == np.float64 else "float"


def _strides(a):
    return tuple(np.int64(s // a.itemsize) for s in a.strides)


def _device_plan(plan, dtype):
    """The sparse filterbank on the current device (weights in ``dtype`` for the SGD kernels and
    in float64 for nnls), cached on the plan."""
    import cupy
    dtype = np.dtype(dtype)
    sp = plan.sparse
    return plan.cached(("cuda", _backend.device_id(cupy), dtype.str), lambda: {
        "lo": cupy.asarray(sp.lo.astype(np.int32)),
        "row_start": cupy.asarray(sp.row_start.astype(np.int64)),
        "w_lo": cupy.asarray(sp.w_lo.astype(dtype)),
        "w_hi": cupy.asarray(sp.w_hi.astype(dtype)),
        "w_lo64": cupy.asarray(sp.w_lo),
        "w_hi64": cupy.asarray(sp.w_hi),
    })


def _pinv_t(plan, dtype):
    """pinv transposed, (n_mels, n_freqs) C order, on the current device, cached on the plan."""
    import cupy
    dtype = np.dtype(dtype)
    return plan.cached(("cuda-pinv-t", _backend.device_id(cupy), dtype.str),
                       lambda: cupy.asarray(np.ascontiguousarray(plan.pinv(dtype).T)))


def _nnls_device(plan):
    """The nnls start factors and ``eps`` on the current device, cached on the plan."""
    import cupy
    nn = plan.nnls()
    return plan.cached(("cuda-nnls", _backend.device_id(cupy)), lambda: {
        "inv_pivot": cupy.asarray(nn.start_inv_pivot),
        "upper_scaled": cupy.asarray(nn.start_upper_scaled),
        "upper": cupy.asarray(nn.start_upper), "eps": nn.eps})


def _grid_for(n_items, per_block, device_limit):
    return max(1, min(math.ceil(n_items / per_block), device_limit))


def _attribute(name):
    import cupy
    return cupy.cuda.Device().attributes[name]


def _sm_count():
    return _attribute("MultiProcessorCount")


def _cooperative_ok():
    """Whether the current device can run a cooperative launch (its grid barrier)."""
    return bool(_attribute("CooperativeLaunch"))


def nnls_shared_bytes(n_mels, n_freqs, warps):
    n_words = (n_freqs + 31) // 32
    return warps * 8 * (7 * (n_mels + 1) + n_words)


def sgd_shared_bytes(n_mels, itemsize, warps):
    return warps * (n_mels + 1) * itemsize


def _shared_layout(per_warp, what):
    """``(warps per block, dynamic shared bytes)`` for a kernel needing ``per_warp`` bytes a warp.

    Up to 48 KB a block needs no opt-in; beyond it the device's opt-in maximum
    (``MaxSharedMemoryPerBlockOptin``: 96-227 KB) is used, and past that a
    :class:`DeviceLimitError` names the need and the maximum.
    """
    if WARPS_PER_BLOCK * per_warp + STATIC_SHARED <= SHARED_LIMIT:
        return WARPS_PER_BLOCK, WARPS_PER_BLOCK * per_warp
    limit = max(SHARED_LIMIT, int(_attribute("MaxSharedMemoryPerBlockOptin"))) - STATIC_SHARED
    warps = min(WARPS_PER_BLOCK, limit // per_warp)
    if warps < 1:
        raise DeviceLimitError(
            f"{what} needs {per_warp} bytes of shared memory for one frame, more than this "
            f"device's maximum of {limit} bytes a block (MaxSharedMemoryPerBlockOptin); "
            "use fewer mels or bins, or device='cpu'")
    return warps, warps * per_warp


def _launch_opt_in(kernel, smem):
    """Let ``kernel`` take ``smem`` bytes of dynamic shared memory (the attribute is per kernel
    and device, both of which ``kernel`` is specific to)."""
    if (smem + STATIC_SHARED > SHARED_LIMIT
            and getattr(kernel, "max_dynamic_shared_size_bytes", 0) < smem):
        kernel.max_dynamic_shared_size_bytes = smem


def _output(out, shape, dtype):
    import cupy
    if out is None:
        return _allocate(cupy.empty, shape, dtype, "the output")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}")
    return out


def memory_available():
    """Bytes the current device can still give: free memory plus CuPy's cached free blocks."""
    import cupy
    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


def _budget(transform):
    """Bytes a call may take: a fraction of what is available, capped by ``max_device_bytes``."""
    available = memory_available()
    budget = int(available * DEVICE_FRACTION)
    cap = getattr(transform, "max_device_bytes", None)
    return (budget if cap is None else min(budget, int(cap))), available


def _oom_type():
    import cupy
    return cupy.cuda.memory.OutOfMemoryError


def _free_cached_blocks():
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()


def _allocate(factory, shape, dtype, what):
    """``factory(shape, dtype)``, retried once after freeing CuPy's cached blocks; a clear
    :class:`DeviceMemoryError` when it still does not fit."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        return factory(shape, dtype)
    except _oom_type():
        _free_cached_blocks()
    try:
        return factory(shape, dtype)
    except _oom_type() as exc:
        raise DeviceMemoryError(
            f"{what} needs {nbytes} bytes on cuda:{_backend.device_id(_cupy())}, "
            f"{memory_available()} bytes are free: use smaller batches or device='cpu'") from exc


def _cupy():
    import cupy
    return cupy


# -- chunks -------------------------------------------------------------------------------------

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
    scratch = 16 if transform.solver == "nnls" else 8  # iterations (and nnls's KKT residual)
    if not host:
        return max(1, budget // scratch)
    transfer = (n_mels + n_freqs) * item
    return max(1, min(budget // ((scratch + transfer) * STREAMS), CHUNK_TARGET_BYTES // transfer))


def _solve_slab(transform, mel, out, iterations, kkt):
    """Solve a (nb, n_mels, nt) slab of independent frames into ``out`` (nb, n_stft, nt),
    ``iterations`` and (nnls) ``kkt`` (nb, nt, C-contiguous) on the current device and stream."""
    plan, dtype = transform.plan, out.dtype
    nb, n_mels, nt = mel.shape
    n_freqs, n_frames = transform.n_stft, nb * nt
    if transform.solver == "lstsq":
        smem = 8 * n_mels
        kernel = _kernel("lstsq.cu", False, f"lstsq_apply<{_ctype(dtype)}>")
        if smem + STATIC_SHARED > SHARED_LIMIT:
            _shared_layout(smem, f"solver='lstsq' at n_mels={n_mels}")     # raises past the max
            _launch_opt_in(kernel, smem)
        grid = _grid_for(n_frames, 1, 64 * _sm_count())
        kernel((grid,), (32 * WARPS_PER_BLOCK,),
               (mel, np.int64(n_frames), np.int32(nt), *_strides(mel), out, *_strides(out),
                _pinv_t(plan, dtype), np.int32(n_mels), np.int32(n_freqs)),
               shared_mem=smem)
        iterations.fill(0)
        return
    dev = _device_plan(plan, dtype)
    nn = _nnls_device(plan)
    warps, smem = _shared_layout(nnls_shared_bytes(n_mels, n_freqs, 1),
                                 f"solver='nnls' at n_mels={n_mels}, n_stft={n_freqs}")
    grid = _grid_for(n_frames, warps, 64 * _sm_count())
    kernel = _kernel("nnls.cu", False, f"nnls_solve<{_ctype(dtype)}>")
    _launch_opt_in(kernel, smem)
    kernel((grid,), (32 * warps,),
           (mel, np.int64(n_frames), np.int32(nt), *_strides(mel), out, *_strides(out),
            iterations, kkt, np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo64"],
            dev["w_hi64"], dev["row_start"], nn["inv_pivot"], nn["upper_scaled"], nn["upper"],
            np.float64(nn["eps"]), np.int64(min(transform.max_iter, step_bound(n_mels))),
            np.float64(transform.tolerance_loss), np.float64(transform.tolerance_change)),
           shared_mem=smem)


class _OomNotice:
    """Says once per call that the device ran out of memory and the chunk was halved."""

    def __init__(self):
        self.said = False

    def __call__(self, chunk, exc):
        _free_cached_blocks()
        if chunk <= 1:
            raise DeviceMemoryError(
                f"the device ran out of memory even for a chunk of one frame "
                f"({memory_available()} bytes free on cuda:{_backend.device_id(_cupy())}); "
                "free device memory or use device='cpu'") from exc
        if not self.said:
            warnings.warn(f"cumel: CUDA device out of memory with chunks of {chunk} frames; "
                          f"freed CuPy's cached blocks, continuing with chunks of {chunk // 2} "
                          "(and halving again if needed)", RuntimeWarning, stacklevel=4)
            self.said = True
        return chunk // 2


def _check_sgd_fits(transform, n_frames, dtype, host_input_bytes):
    """Raise :class:`DeviceMemoryError` up front when an SGD solve cannot fit the device."""
    item = np.dtype(dtype).itemsize
    per_state = n_frames * transform.n_stft * item
    # torchaudio: state, momentum buffer, output; MindSpore: start, iterate, next, output
    need = (3 if transform.solver == "torchaudio" else 4) * per_state + host_input_bytes
    budget, available = _budget(transform)
    if need > budget:
        cap = getattr(transform, "max_device_bytes", None)
        capped = f", max_device_bytes={cap}" if cap is not None else ""
        raise DeviceMemoryError(
            f"solver={transform.solver!r} needs {need} bytes of device memory for this batch "
            f"({n_frames} frames x {transform.n_stft} bins, {np.dtype(dtype).name}), but "
            f"{available} bytes are free on cuda:{_backend.device_id(_cupy())}{capped} "
            f"(a call may use {budget}). Its loss couples the whole batch, so it cannot be "
            "streamed in chunks: use device='cpu' or smaller batches")


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
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    if transform.solver in ("torchaudio", "mindspore"):
        _check_sgd_fits(transform, B * T, dtype, 0)
        return _sgd_retrying(transform, packed, out)
    S = _output(out, (B, n_freqs, T), dtype)
    iterations = _allocate(cupy.empty, (B, T), np.int64, "the iteration counts")
    kkt = _allocate(cupy.empty, (B, T), np.float64, "the KKT residuals")
    budget, _ = _budget(transform)
    chunk = frames_per_chunk(transform, dtype, budget, host=False)
    oom = _OomNotice()
    start = 0
    while start < B * T:
        try:
            for b0, b1, t0, t1 in chunk_slabs(B, T, start, chunk):
                _solve_slab(transform, packed[b0:b1, :, t0:t1], S[b0:b1, :, t0:t1],
                            iterations[b0:b1, t0:t1], kkt[b0:b1, t0:t1])
                start = b1 * T if t1 == T else b0 * T + t1
        except _oom_type() as exc:
            chunk = oom(chunk, exc)
    return S, iterations, (kkt if transform.solver == "nnls" else None)


class _Slot:
    """One chunk in flight: a stream, pinned host buffers and device buffers of ``chunk`` frames."""

    def __init__(self, cupy, transform, dtype, chunk):
        item = np.dtype(dtype).itemsize
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
    :func:`_check_sgd_fits`.

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
    if transform.solver in ("torchaudio", "mindspore"):
        _check_sgd_fits(transform, B * T, dtype, packed.nbytes)
        S_dev, it_dev, _ = _sgd_retrying(transform, _allocate(lambda shape, dtype: cupy.asarray(packed),
                                                           packed.shape, dtype, "the batch"), None)
        S[...] = S_dev.get()
        return S, np.asarray(it_dev.get()), None
    iterations = np.empty((B, T), np.int64)
    kkt = np.empty((B, T), np.float64)
    _prepare(transform, dtype)
    budget, _ = _budget(transform)
    chunk = min(B * T, frames_per_chunk(transform, dtype, budget, host=True))
    oom = _OomNotice()
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
                    _solve_slab(transform, dev_in, dev_out, dev_iter, dev_kkt)
                    dev_out.get(stream=slot.stream,
                                out=slot.host_out[:n * n_freqs].reshape(dev_out.shape))
                    dev_iter.get(stream=slot.stream, out=slot.host_iter[:n].reshape(dev_iter.shape))
                    dev_kkt.get(stream=slot.stream, out=slot.host_kkt[:n].reshape(dev_kkt.shape))
                    slot.pending = (slab, slot.stream.record())
            done = _drain(slots, S, iterations, kkt, T, done)
        except _oom_type() as exc:
            # chunks already queued complete: keep them, resume after the last one (after every
            # stream is idle, so no copy still uses a buffer about to be dropped)
            for slot in slots:
                slot.stream.synchronize()
            done = _drain(slots, S, iterations, kkt, T, done)
            slots.clear()
            chunk = oom(chunk, exc)
    return S, iterations, (kkt if transform.solver == "nnls" else None)


def _prepare(transform, dtype):
    """Build the device constants and compile the kernel on the current stream, and wait for
    them: the chunk streams then only read them (no upload racing a kernel on another stream)."""
    import cupy
    plan = transform.plan
    if transform.solver == "lstsq":
        _pinv_t(plan, dtype)
        _kernel("lstsq.cu", False, f"lstsq_apply<{_ctype(dtype)}>")
    else:
        _device_plan(plan, dtype)
        _nnls_device(plan)
        _kernel("nnls.cu", False, f"nnls_solve<{_ctype(dtype)}>")
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


# -- SGD solvers --------------------------------------------------------------------------------

def iterations_per_launch(transform, n_frames, itemsize):
    """Iterations one SGD launch may run: aims at :data:`LAUNCH_SECONDS` on a slow card (state
    traffic of about 4 values per bin and iteration at :data:`BANDWIDTH_FLOOR`), so no launch
    nears a display watchdog whatever the batch; at least 1."""
    if ITERATIONS_PER_LAUNCH is not None:
        return max(1, int(ITERATIONS_PER_LAUNCH))
    seconds = LAUNCH_OVERHEAD + 4.0 * n_frames * transform.n_stft * itemsize / BANDWIDTH_FLOOR
    return max(1, int(LAUNCH_SECONDS / seconds))


def _sgd_retrying(transform, packed, out):
    """:func:`_solve_sgd`, once more after freeing CuPy's cached blocks if the device runs out
    of memory anyway (the up-front check counts free memory, not fragmentation), then a clear
    :class:`DeviceMemoryError` instead of CuPy's raw one."""
    try:
        return _solve_sgd(transform, packed, out)
    except _oom_type():
        _free_cached_blocks()
    try:
        return _solve_sgd(transform, packed, out)
    except _oom_type() as exc:
        raise DeviceMemoryError(
            f"solver={transform.solver!r} ran out of device memory on "
            f"cuda:{_backend.device_id(_cupy())} ({memory_available()} bytes free) although the "
            f"batch seemed to fit: use device='cpu' or smaller batches") from exc


def _solve_sgd(transform, packed, out):
    import cupy
    solver, plan = transform.solver, transform.plan
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    n_frames = B * T
    dev = _device_plan(plan, dtype)
    ms = _strides(packed)
    warps, smem = _shared_layout(sgd_shared_bytes(n_mels, dtype.itemsize, 1),
                                 f"solver={solver!r} at n_mels={n_mels}")
    scalar = dtype.type
    max_iter = int(transform.max_iter)
    per_launch = iterations_per_launch(transform, n_frames, dtype.itemsize)
    if solver == "torchaudio":
        sgd = transform.sgdargs
        state = transform.start((n_frames, n_freqs), dtype, cupy)       # torch's C order
        buf = cupy.zeros_like(state)
        # loop state in global memory, double-buffered by launch parity: a launch reads slot p
        # and writes slot 1 - p, so blocks of one launch never see each other's update
        iterations = cupy.zeros(2, np.int64)
        prev_loss = cupy.full(2, np.inf, np.float64)
        done = cupy.zeros(2, np.int32)
        cooperative = _cooperative_ok()
        kernel = _kernel("sgd.cu", cooperative, f"torchaudio_sgd<{_ctype(dtype)}>")
        _launch_opt_in(kernel, smem)
        resident = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            kernel.kernel.ptr, 32 * warps, smem) * _sm_count()
        grid = _grid_for(n_frames, warps, resident)
        partials = cupy.zeros(2 * grid, np.float64)
        if not cooperative:
            # no grid barrier: one iteration a launch, its stop test at the start of the next
            # launch (one more launch at the end takes the last test)
            per_launch = 1
        n_launches = -(-max_iter // per_launch) if cooperative else max_iter + 1
        launch = 0
        while launch < n_launches:
            iter_end = min(max_iter, (launch + 1) * per_launch)
            kernel((grid,), (32 * warps,),
                   (packed, np.int64(n_frames), np.int32(T), *ms, state, buf, partials,
                    iterations, prev_loss, done, np.int32(launch & 1),
                    np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
                    dev["row_start"], scalar(sgd["lr"]), scalar(sgd["momentum"]),
                    scalar(sgd["dampening"]), scalar(sgd["weight_decay"]),
                    np.int32(sgd["nesterov"]), scalar(-2.0 / n_frames), np.int64(iter_end),
                    np.int64(max_iter), np.float64(transform.tolerance_loss),
                    np.float64(transform.tolerance_change), np.int32(cooperative)),
                   shared_mem=smem)
            launch += 1
            # the launch wrote its state to slot launch & 1 (now the newest)
            if launch < n_launches and _poll_due(launch, cooperative) and int(done[launch & 1].get()):
                break
        S = _output(out, (B, n_freqs, T), dtype)
        S[...] = state.reshape(B, T, n_freqs).transpose(0, 2, 1)
        return S, cupy.broadcast_to(iterations[launch & 1:(launch & 1) + 1], (B, T)), None

    # mindspore: one block per channel, per-channel loop state in global memory
    x0 = transform.start((B, n_freqs, T), dtype, cupy)                  # MindSpore's C order
    x = cupy.ascontiguousarray(x0.transpose(0, 2, 1))
    del x0
    x_next = cupy.empty_like(x)
    S = _output(out, (B, n_freqs, T), dtype)
    iterations = cupy.zeros(B, np.int64)
    prev = cupy.full(B, np.finfo(dtype).max, np.float64)
    flags = cupy.zeros(B, np.int32)
    kernel = _kernel("sgd.cu", False, f"mindspore_gd<{_ctype(dtype)}>")
    _launch_opt_in(kernel, smem)
    per_launch = iterations_per_launch(transform, n_frames, dtype.itemsize)
    n_launches = -(-max_iter // per_launch)
    for launch in range(n_launches):
        iter_end = min(max_iter, (launch + 1) * per_launch)
        kernel((B,), (32 * warps,),
               (packed, np.int32(T), *ms, x, x_next, S, *_strides(S), iterations, prev, flags,
                np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
                dev["row_start"], scalar(transform.sgdargs["lr"] / T), np.int64(iter_end),
                np.int64(max_iter), np.float64(transform.tolerance_loss),
                np.float64(transform.tolerance_change)),
               shared_mem=smem)
        if launch + 1 < n_launches and bool(((flags & 1) != 0).all()):   # every channel done
            break
    return S, cupy.repeat(iterations[:, None], T, axis=1), None


def _poll_due(launch, long_launches):
    """Whether to read the stop flag (a host synchronisation) after this launch: after every
    launch when launches are long, every 64 when each is one iteration."""
    return long_launches or launch % 64 == 0


GL_THREADS = 256
GL_MAX_BLOCKS = 4096


def griffinlim_update(rebuilt, tprev, mag, alpha):
    """One fused Griffin-Lim step on the GPU (``kernels/griffinlim.cu``)::

        a = rebuilt - alpha * tprev;  X = mag * a / (|a| + 1e-16)

    Parameters
    ----------
    rebuilt : cupy.ndarray, shape (B, T, F), complex64 or complex128, C-contiguous
    tprev : cupy.ndarray like ``rebuilt``, or None for the first step (``tprev = 0``)
    mag : cupy.ndarray, shape (B, T, F), the matching real dtype, C-contiguous
    alpha : float
        ``momentum / (1 + momentum)``.

    Returns
    -------
    X : cupy.ndarray, shape (B, T, F), ``rebuilt.dtype`` (a new array)
    """
    import cupy
    real = np.dtype(mag.dtype)
    rebuilt = cupy.ascontiguousarray(rebuilt)
    mag = cupy.ascontiguousarray(mag)
    out = cupy.empty(rebuilt.shape, rebuilt.dtype)
    has_prev = tprev is not None
    prev = cupy.ascontiguousarray(tprev) if has_prev else rebuilt
    n = int(mag.size)
    grid = max(1, min(-(-n // GL_THREADS), GL_MAX_BLOCKS))
    kernel = _kernel("griffinlim.cu", False, f"griffinlim_update<{_ctype(real)}>")
    kernel((grid,), (GL_THREADS,),
           (rebuilt.view(real), prev.view(real), mag, out.view(real), np.int64(n),
            real.type(alpha), np.int32(has_prev)))
    return out
