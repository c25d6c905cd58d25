"""pytest fixtures that run cumel's CUDA path on the CPU emulator.

Usage (tests/conftest.py re-exports these)::

    @pytest.mark.emulated
    def test_something(emulated_cupy):            # emulated_cupy is the fake ``cupy`` module
        emulated_cupy.cudasim.multiprocessor_count = 1    # settings: see fakecupy.Simulator
        with cudasim.order("reverse"):                     # fiber resume order of the launches
            S = cumel.InverseMelScale(201, 128, device="cuda")(mel)

``emulated_cupy_order`` is the same fixture parametrised over forward, reverse and random:1.
"""
from __future__ import annotations

import platform
import shutil

import pytest

from . import fakecupy

ALL_ORDERS = ("forward", "reverse", "random:1", "random:2")


def clear_cumel_caches():
    """Drop every cache that may hold a CuPy module, kernel, device id or device copy."""
    import cumel.cuda
    import cumel.transforms
    from cumel import _backend
    _backend._cupy_or_none.cache_clear()
    _backend.gpu_available.cache_clear()
    cumel.cuda._module.cache_clear()
    cumel.cuda._kernel_on.cache_clear()
    cumel.transforms.get_plan.cache_clear()


def unavailable_reason():
    """Why the emulator cannot run here, or None: it switches fibers with x86-64 assembly and
    compiles the kernels with the C++ compiler named by $CXX (g++ by default)."""
    from .compiler import CXX
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CUDA emulator needs an x86-64 CPU, this is {platform.machine()}"
    if shutil.which(CXX) is None:
        return f"the CUDA emulator needs a C++17 compiler: {CXX!r} not found (set $CXX)"
    return None


@pytest.fixture
def emulated_cupy():
    """The fake ``cupy`` module installed in ``sys.modules`` (fresh settings), with cumel's
    caches cleared on entry and exit; skips, saying why, where the emulator cannot run."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    saved = fakecupy.install()
    clear_cumel_caches()
    try:
        yield fakecupy._fake_module
    finally:
        fakecupy.uninstall(saved)
        clear_cumel_caches()


@pytest.fixture(params=ALL_ORDERS[:3])
def emulated_cupy_order(request, emulated_cupy):
    """``emulated_cupy`` with the resume order set to each of forward, reverse, random:1."""
    emulated_cupy.cudasim.order = request.param
    return emulated_cupy
