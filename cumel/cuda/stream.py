"""Online fast Griffin-Lim on the device: the launch of ``kernels/stream.cu`` (the FFTs are
``cupy.fft`` and the update ``kernels/griffinlim.cu``, called by :class:`cumel.MelStream`)."""
from __future__ import annotations

import numpy as np

from . import launch
from .compile import _kernel, ctype

SOURCE = "stream.cu"


def stream_overlap(frames, tail, inv, window, hop):
    """The window's overlap-add, normalisation and re-framing in one pass
    (``kernels/stream.cu``)::

        y[q, h]   = inv[q, h] * (tail[q, h] + sum_r w[r hop + h] frames[q - r, r hop + h])
        seg[i, n] = w[n] * y[i hop + n]

    Parameters
    ----------
    frames : cupy.ndarray, shape (S, k, n_fft), float32 or float64
        ``irfft`` of the frames in flight (not windowed).
    tail : cupy.ndarray, shape (S, R - 1, hop)
        The committed frames' overlap-add over the window's first ``R - 1`` slots.
    inv : cupy.ndarray, shape (k + R - 1, hop)
        1 / envelope over the window's slots.
    window : cupy.ndarray, shape (R * hop,)
        The analysis/synthesis window, zero past ``n_fft``.
    hop : int

    Returns
    -------
    seg : cupy.ndarray, shape (S, k, n_fft), the dtype of ``frames`` (a new array): the windowed
    frames of the normalised signal, ready for ``rfft``.
    """
    import cupy
    real = np.dtype(frames.dtype)
    S, k, n_fft = frames.shape
    hops = window.shape[0] // hop
    frames, tail, inv, window = (cupy.ascontiguousarray(a, dtype=real)
                                 for a in (frames, tail, inv, window))
    if tail.size == 0:          # hop >= n_fft: nothing is committed over the window
        tail = cupy.zeros((1,), real)
    out = cupy.empty((S, k, n_fft), real)
    n = S * k * n_fft
    grid = max(1, min(-(-n // launch.GL_THREADS), launch.GL_MAX_BLOCKS))
    kernel = _kernel(SOURCE, False, f"stream_overlap<{ctype(real)}>")
    kernel((grid,), (launch.GL_THREADS,),
           (frames, tail, inv, window, out, np.int64(S), np.int32(k), np.int32(n_fft),
            np.int32(hop), np.int32(hops)))
    return out
