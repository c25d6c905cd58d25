"""Solvers: one module per iteration, each written top to bottom as its docstring's math.

Every ``solve`` takes the mel batch packed as ``(B, n_mels, T)`` on the CPU (NumPy); the CUDA
kernels in ``kernels/`` run the same iterations (see the package ``cumel/cuda/``).
"""
