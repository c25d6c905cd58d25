"""Row and column reductions whose bits do not depend on how many rows or columns there are."""
from __future__ import annotations

import numpy as np

_FIRST = np.zeros(1, dtype=np.intp)


def row_sum(x):
    """Sum over the last axis, each row left to right on its own: (..., n) -> (...).

    ``ufunc.reduceat`` with one segment per row. ``x.sum(-1)`` and ``einsum`` may split a row
    across iterator buffers or choose another summation path by shape, so a frame's (or a
    channel's) result would depend on the batch it is in.
    """
    return np.add.reduceat(x, _FIRST, axis=-1)[..., 0]


def col_sum(x):
    """Sum over axis 0, row after row: (n, m) -> (m,); each column's sum is the same sequence of
    additions whatever the other columns.

    ``np.add.reduce`` over the leading axis of a C-contiguous array with at least two columns
    adds whole rows, one vectorised ``out += x[i]`` per row: sequential for every column. With a
    single column the reduced axis would be the contiguous one, where NumPy sums pairwise (other
    bits), so one zero column is added first.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        return col_sum(x.reshape(x.shape[0], -1)).reshape(x.shape[1:])
    if x.shape[1] == 1:
        return np.add.reduce(np.concatenate([x, np.zeros_like(x)], axis=1), axis=0)[:1]
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return np.add.reduce(x, axis=0)
