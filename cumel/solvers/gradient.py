"""Gradients of the solvers that have one: implicit differentiation of nnls, the adjoint of lstsq.

nnls.  The answer of a frame is ``s = max(A.T mu, 0)`` (times the exact power of two of the
rescaling) where ``mu`` solves ``F(mu) = A max(A.T mu, 0) + eps mu - m = 0`` (``cumel.solvers.nnls``).
Off the kinks, that is where no bin has ``(A.T mu)_j`` exactly 0, ``F`` is linear near ``mu`` with
Jacobian ``J = A D A.T + eps I``, ``D = diag(s > 0)``, so ``J dmu = dm`` and ``ds = D A.T dmu``.
For a loss ``L`` (``J`` is symmetric)::

    dL/dm = J^-1 A D (dL/ds)

``J`` is the tridiagonal matrix of the last Newton step: the backward is one matrix-vector product
with the sparse ``A`` and one tridiagonal solve a frame (the Thomas algorithm, as the kernel's
``thomas_sweep``).  The rescaling drops out: ``s(c m) = c s(m)`` for ``c > 0`` (the problem is
homogeneous), so ``ds/dm`` does not depend on the scale, and ``J`` (``eps`` absolute) is the same
for ``m`` and ``2^-e m``.

Where it is not defined: a bin exactly at its kink, ``(A.T mu)_j = 0`` (``s_j`` is not
differentiable there: its derivative jumps between 0 and ``(A.T dmu)_j``).  Such a bin is returned
as ``s_j = 0`` and counted as clamped, which is the derivative for the changes of ``m`` that keep
it clamped.  It is the derivative of the exact answer of the regularised problem; the iterate
returned meets ``tolerance_loss``, so the two agree to about that relative accuracy.  ``D`` is
read from the answer ``s > 0`` in the output dtype.

lstsq.  ``S = max(P m, 0)`` with ``P = pinv(A)``, linear up to the clamp::

    dL/dm = P.T (D dL/dS)

Both run on NumPy (chunks of frames, float64 arithmetic, the result in the gradient's dtype), in
the compiled CPU loop where numba imports (``cumel.solvers.nnls.compiled.backward_frames``, the
kernel's loop frame by frame; ``CUMEL_CPU`` chooses as for the solve), and on CuPy
(``kernels/nnls.cu``'s ``nnls_backward``: one warp a frame; lstsq: two matrix products).
"""
from __future__ import annotations

import numpy as np

from .. import _backend

CHUNK_ELEMENTS = 1 << 19          # n_freqs x frames gathered at a time: 4 MB of float64


def thomas(diag, upper, rhs, xp=np):
    """Solve the symmetric tridiagonal systems ``T x = rhs``, one per column.

    Parameters
    ----------
    diag, upper : array, shape (n, N)
        Diagonal and super-diagonal (``upper[-1]`` unused) of each column's matrix, symmetric
        positive definite (no pivoting).
    rhs : array, shape (n, N)
    xp : module
        NumPy or CuPy.

    Returns
    -------
    x : array, shape (n, N)
        The same arithmetic, in the same order, as ``thomas_sweep`` in ``kernels/nnls.cu``.
    """
    n = diag.shape[0]
    x = xp.empty_like(rhs)
    upper_scaled = xp.empty_like(diag)
    inv_pivot = 1.0 / diag[0]
    upper_scaled[0] = upper[0] * inv_pivot
    y = rhs[0] * inv_pivot
    x[0] = y
    for k in range(1, n):
        inv_pivot = 1.0 / (diag[k] - upper[k - 1] * upper_scaled[k - 1])
        upper_scaled[k] = upper[k] * inv_pivot
        y = (rhs[k] - upper[k - 1] * y) * inv_pivot
        x[k] = y
    for k in range(n - 2, -1, -1):
        x[k] -= upper_scaled[k] * x[k + 1]
    return x


def nnls_frames_backward(sparse, eps, s, g, xp=np):
    """``dL/dm`` of frames (columns): ``J^-1 A D g`` with ``D = diag(s > 0)``.

    Parameters
    ----------
    sparse : cumel.filterbank.SparseMel
    eps : float
        The regulariser of the forward solve (``NnlsPlan.eps``).
    s, g : array, shape (n_freqs, N)
        The answer and ``dL/ds``, any real dtype.

    Returns
    -------
    array, shape (n_mels, N), float64
    """
    _, _, w_lo, w_hi = sparse.arrays(xp, np.float64)
    w_lo, w_hi = w_lo[:, None], w_hi[:, None]
    active = s > 0
    dg = xp.where(active, g.astype(np.float64), 0.0)
    # the five run sums (A D g's two parts, J's diagonal's two, its upper) in one segment sum
    parts = xp.empty((s.shape[0], 5, s.shape[1]))
    xp.multiply(dg, w_lo, out=parts[:, 0])
    xp.multiply(dg, w_hi, out=parts[:, 1])
    xp.multiply(active, w_lo * w_lo, out=parts[:, 2])
    xp.multiply(active, w_hi * w_hi, out=parts[:, 3])
    xp.multiply(active, w_lo * w_hi, out=parts[:, 4])
    sums = sparse.segment_sum(parts, xp)                  # (n_mels, 5, N)
    below = sparse.shift_up(sums[:, [1, 3]], xp)          # the w_hi parts land one mel higher
    rhs = sums[:, 0] + below[:, 0]
    diag = sums[:, 2] + below[:, 1] + eps
    return thomas(diag, sums[:, 4], rhs, xp)


def nnls_backward(plan, S, G, *, out=None, workers=1):
    """``dL/dM`` of :func:`cumel.solvers.nnls.solve_into`'s answer ``S`` for ``dL/dS = G``.

    Parameters
    ----------
    plan : cumel.transforms.Plan
    S, G : array, shape (B, n_freqs, T)
        NumPy or CuPy (the same), any strides; read only.
    out : array, shape (B, n_mels, T), optional
        Written (its dtype is the result's); default ``G``'s dtype (float32 or float64).
    workers : int
        Threads of the NumPy path (the frames are independent: the bits do not depend on it).

    Returns
    -------
    array, shape (B, n_mels, T)
    """
    xp = _backend.get_array_module(S)
    B, n_freqs, T = S.shape
    if out is None:
        dtype = np.float64 if G.dtype == np.float64 else np.float32
        out = xp.empty((B, plan.sparse.n_mels, T), dtype)
    if B * T == 0:
        return out
    if xp is not np:
        from .. import cuda
        cuda.nnls_backward(plan, S, G, out)
        return out
    from .._threads import map_chunks
    from .nnls import chunks as _nnls_chunks
    eps = plan.nnls().eps
    compiled = _nnls_chunks.compiled_module()       # the compiled CPU loop, where numba imports
    frames = max(1, CHUNK_ELEMENTS // max(n_freqs, 1))
    if compiled is not None and workers > 1:        # no GIL: a few chunks a thread even out the load
        frames = min(frames, max(1, -(-B * T // (4 * workers))))
    chunks = [(a, min(a + frames, B * T)) for a in range(0, B * T, frames)]

    def run(bounds):
        a, b = bounds
        s_cols, g_cols = _gather(S, a, b), _gather(G, a, b)
        if compiled is None:
            _scatter(out, a, b, nnls_frames_backward(plan.sparse, eps, s_cols, g_cols))
            return
        lo, _, w_lo, w_hi = plan.nnls().w
        grad = np.empty((b - a, plan.sparse.n_mels))
        compiled.backward_frames(np.ascontiguousarray(s_cols.T, np.float64),
                                 np.ascontiguousarray(g_cols.T, np.float64), grad, lo, w_lo, w_hi,
                                 plan.sparse.row_start, eps)
        _scatter(out, a, b, grad.T)

    map_chunks(run, chunks, workers if len(chunks) > 1 else 1)
    return out


def lstsq_backward(plan, S, G, *, out=None):
    """``dL/dM = P.T (D G)`` of the "lstsq" answer ``S = max(P M, 0)``, ``P = pinv(A)`` in the
    answer's dtype; NumPy or CuPy arrays of shape (B, n_freqs, T)."""
    xp = _backend.get_array_module(S)
    dtype = np.dtype(np.float64) if S.dtype == np.float64 else np.dtype(np.float32)
    pinv = plan.pinv(dtype)
    pinv_t = plan.cached(("pinv.T", dtype.str, _backend.device_id(xp)),
                         lambda: xp.ascontiguousarray(xp.asarray(pinv.T)))
    masked = xp.where(S > 0, G.astype(dtype, copy=False), dtype.type(0))
    return xp.matmul(pinv_t, masked, out=out)


def _gather(X, a, b):
    """Frames ``a <= f < b`` (``f = batch * T + time``) of (B, n, T) ``X`` as columns (n, b - a)."""
    B, n, T = X.shape
    cols = np.empty((n, b - a), X.dtype)
    f = a
    while f < b:
        item, t0 = divmod(f, T)
        t1 = min(T, t0 + (b - f))
        cols[:, f - a:f - a + t1 - t0] = X[item, :, t0:t1]
        f += t1 - t0
    return cols


def _scatter(out, a, b, cols):
    """The inverse of :func:`_gather`: columns into frames ``a <= f < b`` of ``out``."""
    T = out.shape[2]
    f = a
    while f < b:
        item, t0 = divmod(f, T)
        t1 = min(T, t0 + (b - f))
        out[item, :, t0:t1] = cols[:, f - a:f - a + t1 - t0]
        f += t1 - t0
