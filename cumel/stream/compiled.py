"""The stream's passes between the FFTs, compiled (numba): on the CPU what ``kernels/stream.cu``
and ``kernels/griffinlim.cu`` do on the GPU.

One iteration of online fast Griffin-Lim (the package docstring) over the frames in flight is
``irfft``, the overlap-add with its normalisation and re-framing, ``rfft``, and the update.  The
FFTs stay NumPy's; the two passes between them are these two functions, each one sweep over its
data where the NumPy twin (:meth:`cumel.stream.MelStream._iterate_block`) makes ``2 R + 4``
calls over small arrays (``R = ceil(n_fft / hop)``) and the update five: for one stream and a
few frames in flight, what costs is the calls, not the arithmetic.

Both take the NumPy twin's operations in its order (each slot adds the committed tail, then the
frames ``r = 0 .. R - 1``; the window multiplies before and after): the overlap gives the same
bits, the update the same up to the rounding of ``|b|`` (:func:`update`).  Neither mixes
streams: a stream's output is the same in any batch and however its frames are chunked.  Like the nnls loop
(:mod:`cumel.solvers.nnls.compiled`) they run where numba imports and ``CUMEL_CPU`` allows it;
the machine code is cached on disk.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

SQUARES_LOW = 1e-280       # |b|^2 within these: no underflow or overflow in re^2 + im^2
SQUARES_HIGH = 1e280


@njit(nogil=True, cache=True, error_model="numpy")
def overlap(frames, tail, inv, window, hop, seg):
    """``seg <-`` the windowed frames of the normalised overlap-add (``kernels/stream.cu``)::

        y[q, h]   = inv[q, h] * (tail[q, h] + sum_r w[r hop + h] frames[q - r, r hop + h])
        seg[i, n] = w[n] * y[i hop + n]

    ``frames`` (S, k, n_fft) float64: ``irfft`` of the frames in flight, not windowed; ``tail``
    (S, R - 1, hop): the committed frames' overlap-add over the first ``R - 1`` slots; ``inv``
    (k + R - 1, hop): 1 / envelope; ``window`` (R hop,), zero past ``n_fft``; ``seg`` (S, k,
    n_fft), written.  (The loops run over contiguous slices, a hop at a time, which the
    compiler turns into vector instructions: six times faster than indexing the 3-d arrays.)
    """
    n_streams, k, n_fft = frames.shape
    hops = window.shape[0] // hop
    n_slots = k + hops - 1
    y = np.empty(n_slots * hop)
    for s in range(n_streams):
        for q in range(n_slots):
            slot = y[q * hop:(q + 1) * hop]
            if q < hops - 1:
                slot[:] = tail[s, q]
            else:
                slot[:] = 0.0
            for r in range(hops):          # r ascending: the NumPy twin's order of the sums
                f = q - r
                if f < 0 or f >= k:
                    continue
                m0 = r * hop
                w = window[m0:m0 + hop]
                frame = frames[s, f, m0:m0 + hop]
                for h in range(min(hop, n_fft - m0)):
                    slot[h] += w[h] * frame[h]
            slot_inv = inv[q]
            for h in range(hop):
                slot[h] *= slot_inv[h]
        for i in range(k):
            source = y[i * hop:i * hop + n_fft]
            target = seg[s, i]
            for n in range(n_fft):
                target[n] = source[n] * window[n]


def update(rebuilt, tprev, mag, alpha, eps, out=None):
    """``b = rebuilt - alpha tprev``; ``mag * b / (|b| + eps)`` (a new array): the update of
    :func:`cumel.griffin_lim.update` (``kernels/griffinlim.cu``), in its order.  ``rebuilt``,
    ``tprev`` complex128 and ``mag`` float64, all (S, k, n_freqs) and C-contiguous; into
    ``out`` (the same) if given.

    ``|b|`` is ``sqrt(re^2 + im^2)`` where the squares can neither overflow nor lose digits
    (``hypot`` elsewhere): a libm ``hypot`` a value cost a third of an iteration, and the two
    differ by at most an ulp or two, so this pass matches the NumPy twin to rounding, not bits.
    """
    if out is None:
        out = np.empty(rebuilt.shape, np.complex128)
    _update(rebuilt, tprev, mag, float(alpha), float(eps), out)
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def _update(rebuilt, tprev, mag, alpha, eps, out):
    rebuilt_flat, tprev_flat = rebuilt.reshape(-1), tprev.reshape(-1)
    mag_flat, out_flat = mag.reshape(-1), out.reshape(-1)
    odd = 0
    for j in range(mag_flat.shape[0]):
        re, im, sq = _momentum_step(rebuilt_flat[j], tprev_flat[j], alpha)
        odd += ((sq < SQUARES_LOW) & (sq != 0.0)) | (sq > SQUARES_HIGH)
        scale = mag_flat[j] / (math.sqrt(sq) + eps)
        out_flat[j] = complex(re * scale, im * scale)
    if odd:                            # rare: redo those values with hypot
        for j in range(mag_flat.shape[0]):
            re, im, sq = _momentum_step(rebuilt_flat[j], tprev_flat[j], alpha)
            if not (SQUARES_LOW <= sq <= SQUARES_HIGH) and sq != 0.0:
                scale = mag_flat[j] / (math.hypot(re, im) + eps)
                out_flat[j] = complex(re * scale, im * scale)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _momentum_step(r, p, alpha):
    """``b = r - alpha p`` as (re, im), and ``re^2 + im^2``."""
    re = r.real - p.real * alpha
    im = r.imag - p.imag * alpha
    return re, im, re * re + im * im


def is_cached():
    """Whether numba's on-disk cache holds this module's machine code (unknown: True)."""
    try:
        return bool(overlap._cache._cache_file._load_index())
    except Exception:
        return True
