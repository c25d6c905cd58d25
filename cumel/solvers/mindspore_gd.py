"""MindSpore 2.x ``InverseMelScale``: plain gradient descent, one channel at a time.

For each channel ``c`` (every leading index), with ``A = fb.T`` and ``X`` of shape (T, n_freqs)::

    X_0 = init_c.T          # init_c: (n_freqs, T) from one mt19937 stream shared by the channels
    prev = largest finite value of the dtype
    for i in 0 .. max_iter - 1:
        diff = M_c.T - X_i @ A.T                     # (T, n_mels)
        loss = mean(diff**2)                         # over T * n_mels elements
        X_next = X_i + lr / T * diff @ A             # grad = -(diff @ A) / T, no factor 2
        if loss < tolerance_loss or |prev - loss| < tolerance_change: stop   # X_next dropped
        prev = loss; X_{i+1} = X_next
    return max(X, 0).T

MindSpore's momentum accumulator is rebuilt every call, so ``momentum`` has no effect; there is
no clamp inside the loop.  Channels are independent: each has its own loss and stops on its own.
Here all channels advance together as one array and a finished channel is frozen.  The loss is
squared and accumulated in float64 (here and in ``kernels/sgd.cu``), the iterate stays in the input dtype.
"""
from __future__ import annotations

import numpy as np

from ._rows import row_sum


def solve(mel, fb, x0, *, max_iter, tolerance_loss, tolerance_change, lr):
    """Run MindSpore's loop on the CPU.

    Parameters
    ----------
    mel : ndarray, shape (C, n_mels, T)
    fb : ndarray, shape (n_freqs, n_mels), same dtype
    x0 : ndarray, shape (C, n_freqs, T)
        Start point (see :func:`cumel._random.mindspore_uniform`).

    Returns
    -------
    S : ndarray, shape (C, n_freqs, T)
    iterations : ndarray of int, shape (C,)
        Iterations run per channel.
    """
    dtype = mel.dtype
    C, _, T = mel.shape
    M = np.ascontiguousarray(mel.transpose(0, 2, 1))          # (C, T, n_mels)
    X = np.ascontiguousarray(x0.transpose(0, 2, 1))           # (C, T, n_freqs)
    step = dtype.type(lr / T)
    prev = np.full(C, float(np.finfo(dtype).max))
    iterations = np.zeros(C, dtype=np.int64)
    active = np.arange(C)
    for _ in range(max_iter):
        if active.size == 0:
            break
        everyone = active.size == C           # no gather/scatter copies until a channel stops
        Xa = X if everyone else X[active]
        diff = (M if everyone else M[active]) - Xa @ fb
        d64 = diff.reshape(active.size, -1).astype(np.float64)   # squared in float64, as in sgd.cu
        sq = d64 * d64
        loss = row_sum(sq) / sq.shape[1]
        iterations[active] += 1
        diverged = ~np.isfinite(loss)
        stop = (loss < tolerance_loss) | (np.abs(prev[active] - loss) < tolerance_change) | diverged
        X[active[diverged]] = np.nan            # stop a diverged channel; the transform raises
        prev[active] = loss
        if stop.any():
            go = ~stop
            X[active[go]] = Xa[go] + step * (diff[go] @ fb.T)
            active = active[go]
        elif everyone:
            X += step * (diff @ fb.T)
        else:
            X[active] = Xa + step * (diff @ fb.T)
    return np.ascontiguousarray(np.maximum(X, 0).transpose(0, 2, 1)), iterations
