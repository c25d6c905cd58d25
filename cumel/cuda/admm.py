"""The ADMM of ``cumel.admm`` on the device: the launch of ``kernels/admm.cu`` (the element-wise
pass) and the mel step, ``nnls_prior`` of ``kernels/nnls.cu``. The FFTs are ``cupy.fft``, called by
:func:`cumel.admm.run` through :class:`cumel.GriffinLim`'s STFT.

The mel step is one launch over every frame of the batch (one warp a frame): its inputs and
output are the ADMM's (B, T, n_freqs) arrays, read and written through strides as
(B, n_freqs, T), so nothing is transposed or copied.
"""
from __future__ import annotations

import numpy as np

from ..solvers.nnls import step_bound
from . import launch
from .compile import _kernel, ctype
from .filterbank import device_plan
from .nnls import nnls_device

SOURCE = "admm.cu"
POWER_MODES = {2.0: 2, 1.0: 1}       # anything else: 0 (pow)


def admm_update(Z, XU, P, b, center, spread, rho, sigma, power):
    """The duals, (2), (3) and the mel step's inputs of :func:`cumel.admm.update`, in one pass.

    Parameters
    ----------
    Z : cupy.ndarray, shape (B, T, F), complex64 or complex128, C-contiguous; read
    XU : like ``Z``; ``X + U`` in, the new one out
    P : cupy.ndarray, shape (B, T, F), the matching real dtype, C-contiguous; read
    b : like ``P``; ``Y + V`` in, the new one out
    center, spread : like ``P``; written (one array when ``power == 2``)
    rho, sigma, power : float
    """
    real = np.dtype(P.dtype)
    for name, a in (("Z", Z), ("XU", XU), ("P", P), ("b", b), ("center", center),
                    ("spread", spread)):
        if not a.flags.c_contiguous:
            raise ValueError(f"admm_update: {name} must be C-contiguous")
    det = rho + sigma + rho * sigma
    mode = POWER_MODES.get(float(power), 0)
    n = int(P.size)
    grid = max(1, min(-(-n // launch.GL_THREADS), launch.GL_MAX_BLOCKS))
    kernel = _kernel(SOURCE, False, f"admm_update<{ctype(real)}>")
    t = real.type
    kernel((grid,), (launch.GL_THREADS,),
           (Z.view(real), XU.view(real), P, b, center, spread, np.int64(n),
            t((1.0 + rho) * sigma / det), t(rho / det), t(rho), t(1.0 + rho), t(power),
            t(1.0 / power), t(2.0 * (power - 1.0)), np.int32(mode)))


def nnls_prior(inverse, mel, out, center, spread, floor, inner_steps, tolerance_loss,
               tolerance_change=1e-12):
    """The prior-nnls mel step (``cumel.solvers.nnls``, "Prior") of every frame, one launch.

    Parameters
    ----------
    inverse : cumel.InverseMelScale
        Its plan: the filterbank and nnls constants.
    mel : cupy.ndarray, shape (B, n_mels, T), float32 or float64, any strides
    out, center, spread : cupy.ndarray, shape (B, n_freqs, T), ``mel.dtype``, any strides
        (``center`` and ``spread`` share theirs); ``out`` is written, every element.
    floor : float
    inner_steps : int
        Newton steps after the start (at most :func:`cumel.solvers.nnls.step_bound`).
    """
    import cupy
    plan, dtype = inverse.plan, out.dtype
    B, n_mels, T = mel.shape
    n_freqs, n_frames = out.shape[1], B * T
    if center.strides != spread.strides:
        raise ValueError("nnls_prior: center and spread must have the same strides")
    dev = device_plan(plan, dtype)
    nn = nnls_device(plan)
    iterations = cupy.empty((B, T), np.int64)
    kkt = cupy.empty((B, T), np.float64)
    warps, smem = launch.shared_layout(launch.nnls_shared_bytes(n_mels, n_freqs, 1),
                                       f"the ADMM mel step at n_mels={n_mels}, n_stft={n_freqs}")
    grid = launch.grid_for(n_frames, warps, 64 * launch.sm_count())
    k = _kernel("nnls.cu", False, f"nnls_prior<{ctype(dtype)}>")
    launch.launch_opt_in(k, smem)
    k((grid,), (32 * warps,),
      (mel, np.int64(n_frames), np.int32(T), *launch.strides(mel), out, *launch.strides(out),
       iterations, kkt, np.int32(n_mels), np.int32(n_freqs), dev["lo"], dev["w_lo64"],
       dev["w_hi64"], dev["row_start"], nn["inv_pivot"], nn["upper_scaled"], nn["upper"],
       np.float64(nn["eps"]), np.int64(min(int(inner_steps), step_bound(n_mels))),
       np.float64(tolerance_loss), np.float64(tolerance_change),
       center, spread, *launch.strides(center), np.float64(floor)),
      shared_mem=smem)
    return iterations, kkt
