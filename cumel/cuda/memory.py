"""Device memory: what a call may take, allocation with one retry, running out of memory.

A call may take :data:`DEVICE_FRACTION` of the memory available on the device (free memory plus
CuPy's cached free blocks), capped by the transform's ``max_device_bytes``. An allocation that
fails frees CuPy's cached blocks and tries once more, then raises a clear
:class:`DeviceMemoryError` instead of CuPy's raw ``OutOfMemoryError``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import _backend

# a chunk may take this fraction of the memory free on the device (CuPy's own cached blocks
# count as free)
DEVICE_FRACTION = 0.8


class DeviceMemoryError(MemoryError):
    """The work cannot fit the device's memory (or ``max_device_bytes``)."""


def cupy_module():
    import cupy
    return cupy


def device_name():
    """``cuda:<id>`` of the current device, for messages."""
    return f"cuda:{_backend.device_id(cupy_module())}"


def memory_available():
    """Bytes the current device can still give: free memory plus CuPy's cached free blocks."""
    import cupy
    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


def budget(transform):
    """``(bytes a call may take, bytes available)``: a fraction of what is available, capped by
    ``max_device_bytes``."""
    available = memory_available()
    allowed = int(available * DEVICE_FRACTION)
    cap = getattr(transform, "max_device_bytes", None)
    return (allowed if cap is None else min(allowed, int(cap))), available


def oom_type():
    import cupy
    return cupy.cuda.memory.OutOfMemoryError


def free_cached_blocks():
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()


def allocate(factory, shape, dtype, what):
    """``factory(shape, dtype)``, retried once after freeing CuPy's cached blocks; a clear
    :class:`DeviceMemoryError` when it still does not fit."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        return factory(shape, dtype)
    except oom_type():
        free_cached_blocks()
    try:
        return factory(shape, dtype)
    except oom_type() as exc:
        raise DeviceMemoryError(
            f"{what} needs {nbytes} bytes on {device_name()}, "
            f"{memory_available()} bytes are free: use smaller batches or device='cpu'") from exc


def output(out, shape, dtype):
    """``out`` checked against the result's shape and dtype, or a new device array."""
    import cupy
    if out is None:
        return allocate(cupy.empty, shape, dtype, "the output")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}")
    return out


class OomNotice:
    """Says once per call that the device ran out of memory and the chunk was halved."""

    def __init__(self):
        self.said = False

    def __call__(self, chunk, exc):
        free_cached_blocks()
        if chunk <= 1:
            raise DeviceMemoryError(
                f"the device ran out of memory even for a chunk of one frame "
                f"({memory_available()} bytes free on {device_name()}); "
                "free device memory or use device='cpu'") from exc
        if not self.said:
            warnings.warn(f"cumel: CUDA device out of memory with chunks of {chunk} frames; "
                          f"freed CuPy's cached blocks, continuing with chunks of {chunk // 2} "
                          "(and halving again if needed)", RuntimeWarning, stacklevel=4)
            self.said = True
        return chunk // 2
