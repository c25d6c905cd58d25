"""cudasim: run cumel's CUDA kernels on the CPU, unmodified, in CI (no GPU, no CuPy).

* ``include/``: the C++ device runtime (fibers, strict warp/block/grid barriers, intrinsics) and
  a stand-in ``<cooperative_groups.h>``.
* ``compiler.py``: g++ compile of a kernel source with only its ``__shared__`` declarations
  rewritten, cached on disk.
* ``fakecupy.py``: a strict stand-in for the parts of the ``cupy`` API cumel uses, whose
  ``RawModule`` runs kernels through the emulator.
* ``fixtures.py``: the pytest fixture ``emulated_cupy`` that installs it.
"""
from . import fixtures  # noqa: F401
from .fakecupy import order, parse_order  # noqa: F401
