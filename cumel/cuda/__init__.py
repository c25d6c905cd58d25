"""GPU backend: the CUDA kernels of ``kernels/`` driven through CuPy.

One file per part:

``compile``
    The sources, NVRTC options and the per-process, per-device kernel cache; :data:`KERNELS`
    names every instantiation (the CI compile test and ``python -m bench kernels`` use it).
``launch``
    Launch geometry: device attributes, blocks and grids, the shared memory each kernel takes.
``memory``
    What a call may take of the device's memory, allocation with a retry, out-of-memory errors.
``chunks``
    The entry points :func:`solve` (CuPy input) and :func:`solve_host` (NumPy input): batches cut
    into chunks that fit, resident or streamed through the device on two streams.
``filterbank``
    The sparse filterbank on the device, cached on the transform's Plan.
``nnls``, ``lstsq``, ``sgd``, ``griffinlim``, ``admm``
    One per kernel family: its device constants and its launches (``nnls``: the solve and the
    gradient of its answer, :func:`nnls_backward`; ``sgd``: the torchaudio and
    MindSpore solvers, which take the whole batch; ``griffinlim``: the fused update; ``admm``:
    the fused update of ``cumel.admm`` and its mel step, the prior variant of nnls; ``stream``:
    the overlap-add and re-framing of :class:`cumel.MelStream`'s window).

Everything runs on the current device and CuPy's current stream: the caller
(``InverseMelScale.__call__``) enters the input's device first. Device copies of the
per-filterbank constants hang off the transform's :class:`Plan`, built on first use per device
and dtype. :func:`solve` (device input) synchronises with the host only to poll the SGD
solvers' stop flag between launches; :func:`solve_host` (host input) streams chunks through the
device on two streams of its own.

CuPy is imported inside the functions: importing this package without CuPy is harmless.
"""
from __future__ import annotations

from .admm import admm_update, nnls_prior
from .chunks import CHUNK_TARGET_BYTES, STREAMS, chunk_slabs, frames_per_chunk, solve, solve_host
from .compile import (CXX_OPTIONS, KERNELS, _kernel, _kernel_on, _module, compile_options,
                      kernel_dir, kernel_source, module_code)
from .griffinlim import griffinlim_update
from .launch import (GL_MAX_BLOCKS, GL_THREADS, SHARED_LIMIT, STATIC_SHARED, WARPS_PER_BLOCK,
                     DeviceLimitError, lstsq_shared_bytes, nnls_shared_bytes, sgd_shared_bytes,
                     shared_layout)
from .memory import DEVICE_FRACTION, DeviceMemoryError, memory_available
from .nnls import backward as nnls_backward
from .sgd import iterations_per_launch
from .stream import stream_overlap

__all__ = [
    "solve", "solve_host", "nnls_backward", "griffinlim_update", "admm_update", "nnls_prior",
    "stream_overlap",
    "DeviceMemoryError", "DeviceLimitError",
    "KERNELS", "CXX_OPTIONS", "kernel_dir", "kernel_source", "module_code", "compile_options",
    "chunk_slabs", "frames_per_chunk", "iterations_per_launch", "memory_available",
    "nnls_shared_bytes", "sgd_shared_bytes", "lstsq_shared_bytes", "shared_layout",
    "WARPS_PER_BLOCK", "SHARED_LIMIT", "STATIC_SHARED", "GL_THREADS", "GL_MAX_BLOCKS",
    "STREAMS", "CHUNK_TARGET_BYTES", "DEVICE_FRACTION", "_module", "_kernel", "_kernel_on",
]
