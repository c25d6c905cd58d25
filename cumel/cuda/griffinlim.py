"""Griffin-Lim on the device: the launch of ``kernels/griffinlim.cu`` (the FFTs are ``cupy.fft``,
called by :class:`cumel.GriffinLim`)."""
from __future__ import annotations

import numpy as np

from . import launch
from .compile import _kernel, ctype

SOURCE = "griffinlim.cu"


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
    grid = max(1, min(-(-n // launch.GL_THREADS), launch.GL_MAX_BLOCKS))
    kernel = _kernel(SOURCE, False, f"griffinlim_update<{ctype(real)}>")
    kernel((grid,), (launch.GL_THREADS,),
           (rebuilt.view(real), prev.view(real), mag, out.view(real), np.int64(n),
            real.type(alpha), np.int32(has_prev)))
    return out
