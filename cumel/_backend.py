"""The backend seam: the one place that knows NumPy from CuPy.

Everything else takes an array module ``xp`` (the ``cupy.get_array_module`` convention).
CuPy is imported lazily and only when a CuPy array or ``device="cuda"``/``"auto"`` asks for it,
so ``import cumel`` works, and prints nothing, on a machine without CuPy, a driver or a GPU.
"""
from __future__ import annotations

import functools

import numpy as np

DEVICES = (None, "cpu", "cuda", "auto")


@functools.lru_cache(maxsize=1)
def _cupy_or_none():
    try:
        import cupy
    except Exception:  # not installed, or installed without a usable CUDA runtime
        return None
    return cupy


@functools.lru_cache(maxsize=1)
def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    cupy = _cupy_or_none()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def cupy_module():
    """CuPy, or a clear error saying why it cannot be used."""
    cupy = _cupy_or_none()
    if cupy is None:
        raise RuntimeError("device='cuda' needs CuPy: pip install 'cumel[cuda13]' (or cuda12)")
    if not gpu_available():
        raise RuntimeError("device='cuda' was asked for, but no CUDA device is usable "
                           "(CuPy found no GPU or no driver)")
    return cupy


def is_cupy_array(x):
    cupy = _cupy_or_none()
    return cupy is not None and isinstance(x, cupy.ndarray)


def get_array_module(x):
    """``cupy`` for CuPy arrays, ``numpy`` for everything else."""
    return _cupy_or_none() if is_cupy_array(x) else np


def device_id(xp):
    """Identity of the device ``xp`` computes on: None for NumPy, the CUDA device id for CuPy.
    Keys the per-device caches (plans, kernels, starts)."""
    return None if xp is np else xp.cuda.Device().id


def check_device(device):
    if isinstance(device, str):
        device = device.lower()
    if device not in DEVICES:
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'auto', got {device!r}")
    return device


def select(x, device):
    """Decide where to compute.

    Returns ``(xp, x_on_xp, to_caller)``: a CuPy input runs on its own device; a NumPy input
    runs on the CPU unless ``device`` is "cuda" (or "auto" with a GPU present), and the result
    goes back to NumPy through ``to_caller``.
    """
    device = check_device(device)
    if is_cupy_array(x):
        if device == "cpu":
            return np, x.get(), _cupy_or_none().asarray
        return _cupy_or_none(), x, _identity
    if device == "cuda" or (device == "auto" and gpu_available()):
        cupy = cupy_module()
        return cupy, cupy.asarray(x), _to_numpy
    return np, np.asarray(x), _identity


def out_view(out, xp):
    """The caller's ``out`` as an ``xp`` array sharing its memory, or a ValueError naming it."""
    if xp is np:
        if not isinstance(out, np.ndarray):
            raise ValueError(f"out must be a NumPy array for a computation on the CPU, got "
                             f"{type(out).__name__}")
    elif not is_cupy_array(out):
        raise ValueError(f"out must be a CuPy array for a computation on the GPU, got "
                         f"{type(out).__name__}")
    return out


def _identity(a):
    return a


def _to_numpy(a):
    return a.get()


def to_numpy(a):
    """Host copy of a NumPy or CuPy array."""
    return a.get() if is_cupy_array(a) else np.asarray(a)
