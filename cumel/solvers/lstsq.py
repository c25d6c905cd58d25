"""torchaudio 2.x ``InverseMelScale``: least squares, then relu.

    S = max(pinv(A) @ M, 0),     A = fb.T  (n_mels, n_freqs)

``pinv(A)`` is the minimum-norm least-squares solution operator (LAPACK gelsd's answer), so this
is correct where torchaudio's default ``gels`` driver raises on rank-deficient filterbanks (empty
or collinear filters, e.g. 201 bins x 128 mels).  Singular values below
``eps(dtype) * max(n_mels, n_freqs) * sigma_max`` are dropped, torch's and NumPy's default.
The pseudo-inverse is computed once per filterbank and dtype (cached on the plan); a call is one
matrix product.
"""
from __future__ import annotations

import numpy as np


def pseudo_inverse(fb, dtype):
    """``pinv(fb.T)`` of shape (n_freqs, n_mels), computed in float64, returned in ``dtype``."""
    dtype = np.dtype(dtype)
    A = fb.astype(dtype).astype(np.float64).T
    rcond = np.finfo(dtype).eps * max(A.shape)
    return np.linalg.pinv(A, rcond=rcond).astype(dtype)


def solve(mel, pinv, xp=np, out=None):
    """``max(pinv @ mel, 0)``: (B, n_mels, T) -> (B, n_freqs, T), written into ``out`` if given."""
    S = xp.matmul(pinv, mel, out=out)
    return xp.maximum(S, 0, out=S)
