"""NumPy's real FFTs over the last axis, called without ``numpy.fft``'s Python wrapper.

The stream's iterations transform a few frames at a time, twice an iteration: there the
wrapper (argument checks, array-function dispatch, the output's allocation) cost as much as the
transforms, ~15 us a call.  These call the same ufuncs (``numpy.fft._pocketfft_umath``, NumPy
2) with the same normalisation, so the bits are ``numpy.fft``'s; where this NumPy lays them out
otherwise, or they fail a check against ``numpy.fft`` on import, they are ``numpy.fft``'s.
"""
from __future__ import annotations

import numpy as np


def _pocketfft():
    """NumPy's FFT ufuncs (``numpy.fft._pocketfft_umath``, NumPy 2), or None where this NumPy
    lays them out otherwise or they do not give ``numpy.fft``'s bits on a test signal."""
    try:
        from numpy.fft import _pocketfft_umath as ufuncs
        x = np.random.default_rng(0).standard_normal((2, 16))
        X = np.empty((2, 9), complex)
        y = np.empty((2, 16))
        ufuncs.rfft_n_even(x, 1.0, out=X)
        ufuncs.irfft(X, 1.0 / 16, out=y)
        if np.array_equal(X, np.fft.rfft(x)) and np.array_equal(y, np.fft.irfft(X, n=16)):
            return ufuncs
    except Exception:
        pass
    return None


_UFUNCS = _pocketfft()


def rfft(x, n_fft, out=None):
    """``numpy.fft.rfft(x, n=n_fft, axis=-1)`` for real float64 ``x`` of last axis ``n_fft``
    (even): the same ufunc, without the wrapper's ~15 us a call (an iteration makes two calls
    over a few frames: the wrapper cost as much as the transforms); into ``out`` if given."""
    if _UFUNCS is None or n_fft % 2:
        return np.fft.rfft(x, n=n_fft, axis=-1, out=out)
    if out is None:
        out = np.empty(x.shape[:-1] + (n_fft // 2 + 1,), np.complex128)
    return _UFUNCS.rfft_n_even(x, 1.0, out=out)


def irfft(X, n_fft, out=None):
    """``numpy.fft.irfft(X, n=n_fft, axis=-1)`` for complex128 ``X``, as :func:`rfft`."""
    if _UFUNCS is None:
        return np.fft.irfft(X, n=n_fft, axis=-1, out=out)
    if out is None:
        out = np.empty(X.shape[:-1] + (n_fft,))
    return _UFUNCS.irfft(X, 1.0 / n_fft, out=out)
