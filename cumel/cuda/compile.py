"""Compile: the CUDA sources of ``kernels/``, NVRTC options and the per-device kernel cache.

Sources ship inside the package (``cumel.kernels``) and are compiled by NVRTC through
``cupy.RawModule`` once per process and device (``functools.lru_cache``). :data:`KERNELS` lists
every instantiation; the CI compile test (``tests/test_kernels_compile.py``) and the kernel
report (``python -m bench kernels``) use this very table. The code handed to NVRTC has every
``#include "..."`` of ``kernels/`` inlined (:func:`module_code`): CuPy's on-disk cache is keyed
on the code string, so a change to ``common.cuh`` alone recompiles.

A new kernel is one entry of :data:`KERNELS` here and one launcher module beside this one.
"""
from __future__ import annotations

import functools
import re
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from .. import _backend

# (source file, cooperative launch?) -> the instantiations compiled from it
KERNELS = {
    ("nnls.cu", False): ("nnls_solve<float>", "nnls_solve<double>", "nnls_prior<float>",
                         "nnls_prior<double>", "nnls_backward<float>", "nnls_backward<double>"),
    ("lstsq.cu", False): ("lstsq_apply<float>", "lstsq_apply<double>"),
    ("sgd.cu", True): ("torchaudio_sgd<float>", "torchaudio_sgd<double>"),
    ("sgd.cu", False): ("torchaudio_sgd<float>", "torchaudio_sgd<double>",
                        "mindspore_gd<float>", "mindspore_gd<double>"),
    ("griffinlim.cu", False): ("griffinlim_update<float>", "griffinlim_update<double>"),
    ("admm.cu", False): ("admm_update<float>", "admm_update<double>"),
    ("stream.cu", False): ("stream_overlap<float>", "stream_overlap<double>"),
}
CXX_OPTIONS = ("-std=c++17",)


def kernel_dir():
    """Folder holding the ``.cu`` sources: the installed ``cumel.kernels`` package, or the
    source tree's ``kernels/`` when cumel runs uninstalled (``PYTHONPATH=.``)."""
    try:
        return resources.files("cumel.kernels")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "kernels"


def kernel_source(name):
    return kernel_dir().joinpath(name).read_text()


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r'^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$', re.M)


def module_code(name):
    """The code handed to NVRTC for ``kernels/name``: the source with every quoted include of
    ``kernels/`` inlined, once each (what ``#pragma once`` would do).

    CuPy keys its compiled-kernel cache (in memory and on disk) on this string, so inlining makes
    the key cover every file the kernel is built from: a change to ``common.cuh`` alone can no
    longer reuse a stale binary. System includes (``<cooperative_groups.h>``) stay includes.
    """
    seen = set()

    def expand(file_name):
        if file_name in seen:
            return f"// cumel: {file_name} already inlined above\n"
        seen.add(file_name)
        text = _PRAGMA_ONCE.sub("", kernel_source(file_name))
        return _LOCAL_INCLUDE.sub(lambda m: (f"// ---- cumel: inlined {m.group(1)} ----\n"
                                             + expand(m.group(1))
                                             + f"// ---- cumel: end of {m.group(1)} ----"), text)

    return expand(name)


def compile_options():
    """NVRTC options used at run time (and by the CI compile test, plus its -arch)."""
    return CXX_OPTIONS + (f"-I{kernel_dir()}",)


@functools.lru_cache(maxsize=None)
def _module(source_name, cooperative, device_id):
    import cupy
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=module_code(source_name), options=compile_options(),
                                name_expressions=KERNELS[(source_name, cooperative)],
                                enable_cooperative_groups=cooperative)
        module.compile()
    return module


_compile_lock = threading.Lock()   # two threads asking for the same kernel compile it once


def _kernel(source_name, cooperative, name):
    """The compiled kernel ``name`` (an entry of :data:`KERNELS`) for the current device."""
    import cupy
    with _compile_lock:
        return _kernel_on(source_name, cooperative, name, _backend.device_id(cupy))


@functools.lru_cache(maxsize=None)
def _kernel_on(source_name, cooperative, name, device_id):
    return _module(source_name, cooperative, device_id).get_function(name)


def ctype(dtype):
    """The C++ type of a kernel instantiation for ``dtype`` ("float" or "double")."""
    return "double" if np.dtype(dtype) == np.float64 else "float"
