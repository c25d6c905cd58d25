"""torchaudio 0.8 ``InverseMelScale``: SGD with momentum on one loss over the whole batch.

With ``M`` packed as ``(B, T, n_mels)``, ``S`` as ``(B, T, n_freqs)`` and ``fb`` (n_freqs, n_mels)::

    S_0 = torch.rand(B, T, n_freqs)                       # cumel._random.torch_rand
    for i in 0 .. max_iter - 1:
        diff_i = M - S_i @ fb
        loss_i = mean_{b,t} sum_k diff_i[b, t, k]**2       # ONE scalar for the batch
        g_i    = -2 / (B * T) * diff_i @ fb.T  (+ weight_decay * S_i)
        buf_i  = g_i if i == 0 else momentum * buf_{i-1} + (1 - dampening) * g_i
        step_i = g_i + momentum * buf_i if nesterov else buf_i       (g_i if momentum == 0)
        S_{i+1} = max(S_i - lr * step_i, 0)                # buf is not clamped
        if loss_i < tolerance_loss or |loss_{i-1} - loss_i| < tolerance_change: stop
    return max(S, 0) as (B, n_freqs, T)

``loss_{-1} = inf``; the step of the stopping iteration is applied.  The loss is squared and
accumulated in float64 (here and in ``kernels/sgd.cu``), the iterate stays in the input dtype;
torch's float32 sum can stop one iteration earlier or later on near-ties (REFERENCE.md).  The global
loss makes the effective step shrink as the batch grows, exactly as in torchaudio; that is the point of this
solver (compatibility), not a recommendation.
"""
from __future__ import annotations

import numpy as np

from ._rows import row_sum


def solve(mel, fb, s0, *, max_iter, tolerance_loss, tolerance_change, sgd):
    """Run the torchaudio 0.8 loop on the CPU.

    Parameters
    ----------
    mel : ndarray, shape (B, n_mels, T)
    fb : ndarray, shape (n_freqs, n_mels), same dtype as ``mel``
    s0 : ndarray, shape (B, T, n_freqs)
        Start point (see :func:`cumel._random.torch_rand`).
    sgd : dict
        Canonical SGD arguments (lr, momentum, dampening, nesterov, weight_decay).

    Returns
    -------
    S : ndarray, shape (B, n_freqs, T)
    iterations : int
        Iterations run (the same for every frame: the loss is global).
    """
    dtype = mel.dtype
    B, _, T = mel.shape
    M = np.ascontiguousarray(mel.transpose(0, 2, 1))
    S = s0.copy()
    lr, momentum, dampening = (dtype.type(sgd[k]) for k in ("lr", "momentum", "dampening"))
    weight_decay, nesterov = dtype.type(sgd["weight_decay"]), sgd["nesterov"]
    grad_scale = dtype.type(-2.0 / (B * T))
    buf = None
    prev_loss = np.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):
        diff = M - S @ fb
        diff64 = diff.astype(np.float64)         # squared in float64, as in kernels/sgd.cu
        loss = float(np.sum(row_sum(diff64 * diff64))) / (B * T)
        g = (grad_scale * diff) @ fb.T
        if weight_decay:
            g += weight_decay * S
        if momentum:
            buf = g if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        S -= lr * g
        np.maximum(S, 0, out=S)
        if not np.isfinite(loss):
            S[...] = np.nan                      # diverged: stop, the transform raises
            break
        if loss < tolerance_loss or abs(prev_loss - loss) < tolerance_change:
            break
        prev_loss = loss
    return np.ascontiguousarray(S.transpose(0, 2, 1)), iterations
