"""nnls on the device: the plan's constants and the launch of ``kernels/nnls.cu``.

One warp per frame, the whole Newton solve in one launch, frames independent: a slab of any
frames (any strides) is one launch; :mod:`cumel.cuda.chunks` cuts a batch into slabs.
"""
from __future__ import annotations

import numpy as np

from .. import _backend
from ..solvers.nnls import step_bound
from . import launch
from .compile import _kernel, ctype
from .filterbank import device_plan

SOURCE = "nnls.cu"
# device scratch per frame besides the input and output: the Newton step count and the final
# KKT residual (int64 + float64)
SCRATCH_BYTES_PER_FRAME = 16


def nnls_device(plan):
    """The nnls start factors and ``eps`` on the current device, cached on the plan."""
    import cupy
    nn = plan.nnls()
    return plan.cached(("cuda-nnls", _backend.device_id(cupy)), lambda: {
        "inv_pivot": cupy.asarray(nn.start_inv_pivot),
        "upper_scaled": cupy.asarray(nn.start_upper_scaled),
        "upper": cupy.asarray(nn.start_upper), "eps": nn.eps})


def kernel(dtype):
    return _kernel(SOURCE, False, f"nnls_solve<{ctype(dtype)}>")


def backward_kernel(dtype):
    return _kernel(SOURCE, False, f"nnls_backward<{ctype(dtype)}>")


def prepare(transform, dtype):
    """Upload the constants and compile the kernel (on the current stream)."""
    device_plan(transform.plan, dtype)
    nnls_device(transform.plan)
    kernel(dtype)


def solve_slab(transform, mel, out, iterations, kkt):
    """Solve a (nb, n_mels, nt) slab of independent frames into ``out`` (nb, n_stft, nt),
    ``iterations`` and ``kkt`` (nb, nt, C-contiguous) on the current device and stream."""
    plan, dtype = transform.plan, out.dtype
    nb, n_mels, nt = mel.shape
    n_freqs, n_frames = transform.n_stft, nb * nt
    dev = device_plan(plan, dtype)
    nn = nnls_device(plan)
    warps, smem = launch.shared_layout(launch.nnls_shared_bytes(n_mels, n_freqs, 1),
                                       f"solver='nnls' at n_mels={n_mels}, n_stft={n_freqs}")
    grid = launch.grid_for(n_frames, warps, 64 * launch.sm_count())
    k = kernel(dtype)
    launch.launch_opt_in(k, smem)
    k((grid,), (32 * warps,),
      (mel, np.int64(n_frames), np.int32(nt), *launch.strides(mel), out, *launch.strides(out),
       iterations, kkt, np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo64"],
       dev["w_hi64"], dev["row_start"], nn["inv_pivot"], nn["upper_scaled"], nn["upper"],
       np.float64(nn["eps"]), np.int64(min(transform.max_iter, step_bound(n_mels))),
       np.float64(transform.tolerance_loss), np.float64(transform.tolerance_change)),
      shared_mem=smem)


def backward(plan, S, G, out):
    """``out`` (B, n_mels, T) <- ``dL/dM`` of the answer ``S`` for ``dL/dS = G`` (both
    (B, n_freqs, T), any strides), ``kernels/nnls.cu``'s ``nnls_backward`` on the current device
    and stream (see ``cumel.solvers.gradient``). ``G`` is read in ``out``'s dtype, as ``S``."""
    dtype = out.dtype
    B, n_freqs, T = S.shape
    n_mels, n_frames = plan.sparse.n_mels, B * T
    S, G = S.astype(dtype, copy=False), G.astype(dtype, copy=False)
    dev = device_plan(plan, dtype)
    threads, smem = launch.block_geometry("nnls_backward", n_mels, n_freqs, out.itemsize)
    warps = threads // 32
    grid = launch.grid_for(n_frames, warps, 64 * launch.sm_count())
    k = backward_kernel(dtype)
    launch.launch_opt_in(k, smem)
    k((grid,), (32 * warps,),
      (S, *launch.strides(S), G, *launch.strides(G), out, *launch.strides(out),
       np.int64(n_frames), np.int32(T), np.int32(n_mels), np.int32(n_freqs), dev["lo"],
       dev["w_lo64"], dev["w_hi64"], dev["row_start"], np.float64(plan.nnls().eps)),
      shared_mem=smem)
    return out
