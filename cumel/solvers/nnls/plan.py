"""Per-filterbank constants of the iteration (:class:`NnlsPlan`) and the proximal variant's
inputs (:class:`Prior`)."""
from __future__ import annotations

import numpy as np

from .iteration import EPS_REL
from .tridiagonal import _thomas_factor


class Prior:
    """The centre and spread of the proximal variant (package docstring, "Prior").

    Parameters
    ----------
    center : ndarray, shape (B, n_freqs, T)
        ``c``, any real dtype and strides; read only.
    spread : ndarray, shape (B, n_freqs, T)
        ``v >= 0`` up to a per-frame factor (each frame's is divided by its maximum); read only.
    floor : float, default 0.0
        Added to the normalised spread.
    """

    def __init__(self, center, spread, floor=0.0):
        self.center, self.spread, self.floor = center, spread, float(floor)


class NnlsPlan:
    """Per-filterbank constants of the nnls iteration, computed once.

    The NumPy loop keeps its bin vectors (``t``, ``s``, ``d``, ``u``; n_freqs rows, one column a
    frame) in RUN-MAJOR order: the mels sorted by the length of their bin run (the bins with
    ``lo == k``), longest first, and the bins listed by their position in the run: first the
    first bin of every run, then the second bins, and so on.  Block ``r`` (rows
    ``offsets[r]:offsets[r + 1]``) holds the r-th bins, and the runs that long are its first
    rows, in the sorted order.  A sum over every run (the products ``A x``) is then a handful of
    contiguous slice additions, each run's bins added in bin order (the kernels' order).

    Attributes
    ----------
    eps : float
        Regulariser (absolute).
    w : tuple of ndarray
        ``(lo, hi, w_lo, w_hi)`` of :class:`cumel.filterbank.SparseMel` in float64 (bin order).
    order, inverse : ndarray of intp, shape (n_freqs,)
        Run-major position -> bin, and bin -> run-major position.
    offsets : tuple of int
        Block boundaries (``len = longest run + 1``).
    lo, hi : ndarray of intp, shape (n_freqs,)
        ``lo`` and ``min(lo + 1, n_mels - 1)`` of the bins in run-major order.
    weights : dict of ndarray, shape (n_freqs, 1)
        ``w_lo``, ``w_hi``, ``w_lo2``, ``w_hi2``, ``w_lohi`` (products of the two weights) in
        run-major order, as columns broadcast over frames.
    bin_weights : dict of ndarray, shape (n_freqs,)
        The same, flat (indexed by bin).
    sorted_to_mel : ndarray of intp, shape (n_mels,)
        Position of each mel in the sorted order (``sums_sorted[sorted_to_mel]`` is in mel
        order).
    start_diag, start_upper : ndarray, shape (n_mels,)
        Diagonal and super-diagonal of ``A A.T + eps I``, the start's system (NumPy solves it
        by cyclic reduction, as the Newton steps' systems).
    start_inv_pivot, start_upper_scaled : ndarray, shape (n_mels,)
        Its Thomas factorisation, ``1 / pivot_k`` and ``upper_k / pivot_k`` (the kernels').
    """

    def __init__(self, sparse):
        self.sparse = sparse
        self.n_mels = sparse.n_mels
        self.w = sparse.arrays(np, np.float64)
        lo, hi, w_lo, w_hi = self.w
        blocks = sparse.run_rows
        self.order = np.concatenate(blocks).astype(np.intp) if blocks else np.zeros(0, np.intp)
        self.inverse = np.argsort(self.order, kind="stable").astype(np.intp)
        self.offsets = tuple(int(v) for v in np.cumsum([0] + [b.size for b in blocks]))
        self.lo, self.hi = lo[self.order], hi[self.order]
        bin_weights = {"w_lo": w_lo, "w_hi": w_hi, "w_lo2": w_lo * w_lo, "w_hi2": w_hi * w_hi,
                       "w_lohi": w_lo * w_hi}
        self.weights = {k: np.ascontiguousarray(v[self.order][:, None]) for k, v in bin_weights.items()}
        self.bin_weights = {k: v[:, 0] for k, v in self.weights.items()}   # (n_freqs,) views
        self.sorted_to_mel = sparse.run_inverse
        diag, upper = sparse.tridiag(np.ones(sparse.n_freqs), np, self.w)
        self.eps = EPS_REL * float(diag.max()) if diag.max() > 0 else EPS_REL
        self.start_upper = upper
        self.start_diag = diag + self.eps
        self.start_inv_pivot, self.start_upper_scaled = _thomas_factor(diag + self.eps, upper)

    def run_sums(self, x, out):
        """Sum of each bin run of the run-major ``x`` (n_freqs, N) into ``out`` (n_mels, N), in
        the sorted order: ``out[i] = x[first bin of run i] + x[second bin] + ...``."""
        off = self.offsets
        first = off[1] - off[0] if len(off) > 1 else 0
        out[first:] = 0.0
        if first:
            np.copyto(out[:first], x[:first])
        for r in range(1, len(off) - 1):
            out[:off[r + 1] - off[r]] += x[off[r]:off[r + 1]]
        return out

    def to_mel_order(self, sums_sorted, out):
        """``out[k] = sums_sorted[sorted position of mel k]`` (n_mels, N)."""
        return np.take(sums_sorted, self.sorted_to_mel, axis=0, out=out, mode="clip")
