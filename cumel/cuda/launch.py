"""Launch geometry: device attributes, blocks, grids and the shared memory each kernel takes.

The shared-memory sizes here are the ones the launches use, written as plain functions of the
shape so that ``python -m bench kernels`` can state them per workload and architecture without
a device (:func:`shared_layout` takes the opt-in maximum as an argument for that reason).
"""
from __future__ import annotations

import math

import numpy as np

WARPS_PER_BLOCK = 4          # 128 threads: one warp per frame
SHARED_LIMIT = 48 * 1024     # bytes of shared memory a block gets without an opt-in
STATIC_SHARED = 512          # static shared memory a kernel may declare (sgd.cu: 33 doubles);
                             # it counts against the same per-block limits as the dynamic part
GL_THREADS = 256             # griffinlim.cu, admm.cu, stream.cu: threads a block, one per element
GL_MAX_BLOCKS = 4096


class DeviceLimitError(RuntimeError):
    """The shape needs more than the device offers (shared memory per block)."""


def attribute(name):
    """A ``cupy.cuda.Device().attributes`` entry of the current device."""
    import cupy
    return cupy.cuda.Device().attributes[name]


def sm_count():
    return attribute("MultiProcessorCount")


def cooperative_ok():
    """Whether the current device can run a cooperative launch (its grid barrier)."""
    return bool(attribute("CooperativeLaunch"))


def grid_for(n_items, per_block, device_limit):
    return max(1, min(math.ceil(n_items / per_block), device_limit))


def strides(a):
    """Strides of ``a`` in elements, as the ``long long`` kernel arguments."""
    return tuple(np.int64(s // a.itemsize) for s in a.strides)


# -- shared memory per kernel -------------------------------------------------------------------

def nnls_shared_bytes(n_mels, n_freqs, warps):
    """nnls.cu: 7 (n_mels + 1) doubles and two masks of n_freqs bits per warp."""
    n_words = (n_freqs + 31) // 32
    return warps * 8 * (7 * (n_mels + 1) + n_words)


def nnls_backward_shared_bytes(n_mels, warps):
    """nnls.cu's nnls_backward: 4 (n_mels + 1) doubles per warp (rhs, diag, upper, scratch)."""
    return warps * 8 * 4 * (n_mels + 1)


def sgd_shared_bytes(n_mels, itemsize, warps):
    """sgd.cu (both kernels): the frame's mel residual, n_mels + 1 values per warp."""
    return warps * (n_mels + 1) * itemsize


def lstsq_shared_bytes(n_mels):
    """lstsq.cu: the block's frame, n_mels doubles."""
    return 8 * n_mels


def shared_layout(per_warp, what, optin_limit=None):
    """``(warps per block, dynamic shared bytes)`` for a kernel needing ``per_warp`` bytes a warp.

    Up to 48 KB a block needs no opt-in; beyond it the device's opt-in maximum
    (``MaxSharedMemoryPerBlockOptin``: 96-227 KB; ``optin_limit`` when given, else asked of the
    current device) is used, and past that a :class:`DeviceLimitError` names the need and the
    maximum.
    """
    if WARPS_PER_BLOCK * per_warp + STATIC_SHARED <= SHARED_LIMIT:
        return WARPS_PER_BLOCK, WARPS_PER_BLOCK * per_warp
    if optin_limit is None:
        optin_limit = int(attribute("MaxSharedMemoryPerBlockOptin"))
    limit = max(SHARED_LIMIT, int(optin_limit)) - STATIC_SHARED
    warps = min(WARPS_PER_BLOCK, limit // per_warp)
    if warps < 1:
        raise DeviceLimitError(
            f"{what} needs {per_warp} bytes of shared memory for one frame, more than this "
            f"device's maximum of {limit} bytes a block (MaxSharedMemoryPerBlockOptin); "
            "use fewer mels or bins, or device='cpu'")
    return warps, warps * per_warp


def launch_opt_in(kernel, smem):
    """Let ``kernel`` take ``smem`` bytes of dynamic shared memory (the attribute is per kernel
    and device, both of which ``kernel`` is specific to)."""
    if (smem + STATIC_SHARED > SHARED_LIMIT
            and getattr(kernel, "max_dynamic_shared_size_bytes", 0) < smem):
        kernel.max_dynamic_shared_size_bytes = smem


def block_geometry(kernel, n_mels, n_freqs, itemsize, optin_limit=None):
    """``(threads per block, dynamic shared bytes)`` of a launch of ``kernel`` (its name without
    the template argument) for a shape: the numbers the launchers in ``nnls.py``, ``lstsq.py``,
    ``sgd.py``, ``griffinlim.py``, ``admm.py`` and ``stream.py`` use, for reports (``python -m
    bench kernels``) and the tests that hold the launchers to them. ``optin_limit`` as for
    :func:`shared_layout`.
    """
    what = f"{kernel} at n_mels={n_mels}, n_stft={n_freqs}"
    if kernel in ("nnls_solve", "nnls_prior"):
        warps, smem = shared_layout(nnls_shared_bytes(n_mels, n_freqs, 1), what, optin_limit)
        return 32 * warps, smem
    if kernel == "nnls_backward":
        warps, smem = shared_layout(nnls_backward_shared_bytes(n_mels, 1), what, optin_limit)
        return 32 * warps, smem
    if kernel in ("torchaudio_sgd", "mindspore_gd"):
        warps, smem = shared_layout(sgd_shared_bytes(n_mels, itemsize, 1), what, optin_limit)
        return 32 * warps, smem
    if kernel == "lstsq_apply":
        smem = lstsq_shared_bytes(n_mels)
        if smem + STATIC_SHARED > SHARED_LIMIT:
            shared_layout(smem, what, optin_limit)                   # raises past the maximum
        return 32 * WARPS_PER_BLOCK, smem
    if kernel in ("griffinlim_update", "admm_update", "stream_overlap"):
        return GL_THREADS, 0
    raise ValueError(f"unknown kernel {kernel!r}")

