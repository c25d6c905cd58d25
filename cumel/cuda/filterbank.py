"""The sparse mel filterbank on the device, shared by the nnls and SGD kernels.

``cumel.filterbank.SparseMel`` (two weights per bin) copied once per device and dtype and cached
on the transform's :class:`~cumel.transforms.Plan`, like every per-filterbank constant.
"""
from __future__ import annotations

import numpy as np

from .. import _backend


def device_plan(plan, dtype):
    """The sparse filterbank on the current device (weights in ``dtype`` for the SGD kernels and
    in float64 for nnls), cached on the plan."""
    import cupy
    dtype = np.dtype(dtype)
    sp = plan.sparse
    return plan.cached(("cuda", _backend.device_id(cupy), dtype.str), lambda: {
        "lo": cupy.asarray(sp.lo.astype(np.int32)),
        "row_start": cupy.asarray(sp.row_start.astype(np.int64)),
        "w_lo": cupy.asarray(sp.w_lo.astype(dtype)),
        "w_hi": cupy.asarray(sp.w_hi.astype(dtype)),
        "w_lo64": cupy.asarray(sp.w_lo),
        "w_hi64": cupy.asarray(sp.w_hi),
    })
