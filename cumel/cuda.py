"""GPU backend: the CUDA kernels of ``kernels/`` driven through CuPy.

* Sources ship inside the package (``cumel.kernels``) and are compiled by NVRTC through
  ``cupy.RawModule`` once per process and device (``functools.lru_cache``); the name expressions
  below are every instantiation, and the CI compile test uses this very table.
* Device copies of the per-filterbank constants hang off the transform's :class:`Plan`, built on
  first use per device and dtype.
* The SGD starts are generated on the host by the same code as the CPU path
  (``InverseMelScale.start``, ``cumel._random``), so a seed gives the same start on both.
* All work is queued on CuPy's current stream; nothing here synchronises with the host.

CuPy is imported inside the functions: importing this module without CuPy is harmless.
"""
from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

import numpy as np

from . import _backend

# (source file, cooperative launch?) -> the instantiations compiled from it
KERNELS = {
    ("nnls.cu", False): ("nnls_solve<float>", "nnls_solve<double>"),
    ("sgd.cu", True): ("torchaudio_sgd<float>", "torchaudio_sgd<double>"),
    ("sgd.cu", False): ("mindspore_gd<float>", "mindspore_gd<double>"),
    ("griffinlim.cu", False): ("griffinlim_update<float>", "griffinlim_update<double>"),
}
CXX_OPTIONS = ("-std=c++17",)
WARPS_PER_BLOCK = 4          # 128 threads: one warp per frame
SHARED_LIMIT = 48 * 1024     # bytes of dynamic shared memory without an opt-in


def kernel_dir():
    """Folder holding the ``.cu`` sources: the installed ``cumel.kernels`` package, or the
    source tree's ``kernels/`` when cumel runs uninstalled (``PYTHONPATH=.``)."""
    try:
        return resources.files("cumel.kernels")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "kernels"


def kernel_source(name):
    return kernel_dir().joinpath(name).read_text()


def compile_options():
    """NVRTC options used at run time (and by the CI compile test, plus its -arch)."""
    return CXX_OPTIONS + (f"-I{kernel_dir()}",)


@functools.lru_cache(maxsize=None)
def _module(source_name, cooperative, device_id):
    import cupy
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=kernel_source(source_name), options=compile_options(),
                                name_expressions=KERNELS[(source_name, cooperative)],
                                enable_cooperative_groups=cooperative)
        module.compile()
    return module


def _kernel(source_name, cooperative, name):
    import cupy
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


def _sm_count():
    import cupy
    return cupy.cuda.Device().attributes["MultiProcessorCount"]


def nnls_shared_bytes(n_mels, n_freqs, warps):
    n_words = (n_freqs + 31) // 32
    return warps * 8 * (7 * (n_mels + 1) + n_words)


def _warps_fitting(per_warp_bytes):
    return max(1, min(WARPS_PER_BLOCK, SHARED_LIMIT // per_warp_bytes))


def _output(out, shape, dtype):
    import cupy
    if out is None:
        return cupy.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}")
    return out


def solve(transform, packed, out=None):
    """Run ``transform``'s solver on a CuPy batch.

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
    iterations : cupy.ndarray of int, shape (B, T)
    """
    import cupy
    solver, plan = transform.solver, transform.plan
    B, n_mels, T = packed.shape
    n_freqs, dtype = transform.n_stft, packed.dtype
    n_frames = B * T
    if solver == "lstsq":
        pinv = plan.cached(("cuda-pinv", _backend.device_id(cupy), dtype.str),
                           lambda: cupy.asarray(plan.pinv(dtype)))
        S = _output(out, (B, n_freqs, T), dtype)
        cupy.maximum(cupy.matmul(pinv, packed), 0, out=S)     # one cuBLAS product, then relu
        return S, cupy.zeros((B, T), np.int64)

    dev = _device_plan(plan, dtype)
    ms = _strides(packed)
    if solver == "nnls":
        nn = _nnls_device(plan)
        warps = _warps_fitting(nnls_shared_bytes(n_mels, n_freqs, 1))
        smem = nnls_shared_bytes(n_mels, n_freqs, warps)
        S = _output(out, (B, n_freqs, T), dtype)
        iterations = cupy.empty(n_frames, np.int32)
        kkt = cupy.empty(n_frames, np.float64)
        grid = _grid_for(n_frames, warps, 64 * _sm_count())
        kernel = _kernel("nnls.cu", False, f"nnls_solve<{_ctype(dtype)}>")
        kernel((grid,), (32 * warps,),
               (packed, np.int64(n_frames), np.int32(T), *ms, S, *_strides(S), iterations, kkt,
                np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo64"], dev["w_hi64"],
                dev["row_start"], nn["inv_pivot"], nn["upper_scaled"], nn["upper"],
                np.float64(nn["eps"]), np.int32(transform.max_iter),
                np.float64(transform.tolerance_loss), np.float64(transform.tolerance_change)),
               shared_mem=smem)
        return S, iterations.reshape(B, T)

    per_warp = (n_mels + 1) * dtype.itemsize
    warps = _warps_fitting(per_warp)
    smem = warps * per_warp
    scalar = dtype.type
    if solver == "torchaudio":
        sgd = transform.sgdargs
        state = transform.start((n_frames, n_freqs), dtype, cupy)       # torch's C order
        buf = cupy.zeros_like(state)
        iterations = cupy.zeros(1, np.int32)
        kernel = _kernel("sgd.cu", True, f"torchaudio_sgd<{_ctype(dtype)}>")
        resident = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            kernel.kernel.ptr, 32 * warps, smem) * _sm_count()
        grid = _grid_for(n_frames, warps, resident)
        partials = cupy.zeros(2 * grid, np.float64)
        kernel((grid,), (32 * warps,),
               (packed, np.int64(n_frames), np.int32(T), *ms, state, buf, partials, iterations,
                np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
                dev["row_start"], scalar(sgd["lr"]), scalar(sgd["momentum"]),
                scalar(sgd["dampening"]), scalar(sgd["weight_decay"]), np.int32(sgd["nesterov"]),
                scalar(-2.0 / n_frames), np.int32(transform.max_iter),
                np.float64(transform.tolerance_loss), np.float64(transform.tolerance_change)),
               shared_mem=smem)
        S = _output(out, (B, n_freqs, T), dtype)
        S[...] = state.reshape(B, T, n_freqs).transpose(0, 2, 1)
        return S, cupy.broadcast_to(iterations.astype(np.int64), (B, T))

    # mindspore: one block per channel
    x0 = transform.start((B, n_freqs, T), dtype, cupy)                  # MindSpore's C order
    x = cupy.ascontiguousarray(x0.transpose(0, 2, 1))
    x_next = cupy.empty_like(x)
    S = _output(out, (B, n_freqs, T), dtype)
    iterations = cupy.zeros(B, np.int32)
    kernel = _kernel("sgd.cu", False, f"mindspore_gd<{_ctype(dtype)}>")
    kernel((B,), (32 * warps,),
           (packed, np.int32(T), *ms, x, x_next, S, *_strides(S), iterations,
            np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo"], dev["w_hi"],
            dev["row_start"], scalar(transform.sgdargs["lr"] / T),
            np.float64(np.finfo(dtype).max), np.int32(transform.max_iter),
            np.float64(transform.tolerance_loss), np.float64(transform.tolerance_change)),
           shared_mem=smem)
    return S, cupy.repeat(iterations.astype(np.int64)[:, None], T, axis=1)


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
