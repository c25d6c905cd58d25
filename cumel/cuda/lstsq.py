"""lstsq on the device: the cached ``pinv`` and the launch of ``kernels/lstsq.cu``.

One block per frame, frames independent: a slab of any frames (any strides) is one launch;
:mod:`cumel.cuda.chunks` cuts a batch into slabs.
"""
from __future__ import annotations

import numpy as np

from .. import _backend
from . import launch
from .compile import _kernel, ctype

SOURCE = "lstsq.cu"
# device scratch per frame besides the input and output: the iteration count (int64, zero)
SCRATCH_BYTES_PER_FRAME = 8


def pinv_t(plan, dtype):
    """pinv transposed, (n_mels, n_freqs) C order, on the current device, cached on the plan."""
    import cupy
    dtype = np.dtype(dtype)
    return plan.cached(("cuda-pinv-t", _backend.device_id(cupy), dtype.str),
                       lambda: cupy.asarray(np.ascontiguousarray(plan.pinv(dtype).T)))


def kernel(dtype):
    return _kernel(SOURCE, False, f"lstsq_apply<{ctype(dtype)}>")


def prepare(transform, dtype):
    """Upload ``pinv`` and compile the kernel (on the current stream)."""
    pinv_t(transform.plan, dtype)
    kernel(dtype)


def solve_slab(transform, mel, out, iterations, kkt):
    """``out = max(pinv mel, 0)`` for a (nb, n_mels, nt) slab on the current device and stream;
    ``iterations`` (nb, nt) is set to 0 and ``kkt`` left alone."""
    plan, dtype = transform.plan, out.dtype
    nb, n_mels, nt = mel.shape
    n_freqs, n_frames = transform.n_stft, nb * nt
    smem = launch.lstsq_shared_bytes(n_mels)
    k = kernel(dtype)
    if smem + launch.STATIC_SHARED > launch.SHARED_LIMIT:
        launch.shared_layout(smem, f"solver='lstsq' at n_mels={n_mels}")     # raises past the max
        launch.launch_opt_in(k, smem)
    grid = launch.grid_for(n_frames, 1, 64 * launch.sm_count())
    k((grid,), (32 * launch.WARPS_PER_BLOCK,),
      (mel, np.int64(n_frames), np.int32(nt), *launch.strides(mel), out, *launch.strides(out),
       pinv_t(plan, dtype), np.int32(n_mels), np.int32(n_freqs)),
      shared_mem=smem)
    iterations.fill(0)
