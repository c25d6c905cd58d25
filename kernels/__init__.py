"""CUDA C++ sources of cumel's fused solver kernels (installed as the package ``cumel.kernels``).

The ``.cu`` files are compiled at run time by ``cumel.cuda`` through ``cupy.RawModule``.
"""
