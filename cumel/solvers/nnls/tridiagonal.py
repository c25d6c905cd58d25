"""Tridiagonal systems of the Newton steps and the start."""
from __future__ import annotations

import numpy as np


# Tridiagonal systems: the Thomas factors of the fixed start system (for the kernels), and cyclic
# reduction for a stack of systems, one per column, vectors along axis 0 (NumPy: every step is
# one vectorised operation over the frames).

def _thomas_factor(diag, upper):
    """Factors of a symmetric tridiagonal matrix: ``1 / pivot_k`` and ``upper_k / pivot_k``."""
    inv_pivot = np.empty_like(diag)
    upper_scaled = np.empty_like(diag)
    pivot = diag[0]
    for k in range(diag.shape[0]):
        if k:
            pivot = diag[k] - upper[k - 1] * upper_scaled[k - 1]
        inv_pivot[k] = 1.0 / pivot
        upper_scaled[k] = upper[k] * inv_pivot[k]
    return inv_pivot, upper_scaled


class _CyclicReduction:
    """Solve ``T_i x_i = rhs_i`` for a stack of symmetric tridiagonal ``T_i`` (n_rows, N each).

    Cyclic (odd-even) reduction: eliminating the even rows leaves a symmetric tridiagonal system
    in the odd rows, half the size; solve that one the same way, then recover the even rows.
    About ``2 log2(n_rows)`` levels of vectorised steps where the Thomas algorithm takes
    ``2 n_rows`` steps, which is what costs in NumPy (the kernel's lane 0 runs Thomas: one
    thread, no step overhead).  Both are Gaussian elimination without pivoting, stable because
    every ``T_i`` is symmetric positive definite, and they give the same solution up to
    rounding.  The reduced systems live in arrays allocated once per chunk, viewed at the number
    of frames still running.

    With ``d`` the diagonal and ``e`` the super-diagonal (``e[-1] = 0``), odd row ``i = 2j + 1``
    keeps ``x_{i-2}``, ``x_i``, ``x_{i+2}`` after subtracting ``e[i-1] / d[i-1]`` times row
    ``i - 1`` and ``e[i] / d[i+1]`` times row ``i + 1``::

        d'[j] = d[i] - e[i-1]^2 / d[i-1] - e[i]^2 / d[i+1]
        e'[j] = -e[i] e[i+1] / d[i+1]
        r'[j] = r[i] - e[i-1] / d[i-1] r[i-1] - e[i] / d[i+1] r[i+1]

    and then ``x[2j] = (r[2j] - e[2j-1] x[2j-1] - e[2j] x[2j+1]) / d[2j]``.
    """

    def __init__(self, n_rows, capacity):
        self.levels = []              # (rows, rows of the reduced system) per level
        rows = n_rows
        while rows > 1:
            self.levels.append((rows, rows // 2))
            rows //= 2
        # per level: diagonal, super-diagonal, right-hand side and solution of the reduced
        # system; three scratch arrays of the first level's size serve every level
        self.buffers = [[np.empty(half * capacity) for _ in range(4)] for _, half in self.levels]
        scratch = [np.empty((n_rows // 2) * capacity) for _ in range(3)]
        for level in self.buffers:
            level.extend(scratch)
        self.programs = {}

    def solve(self, diag, upper, rhs, out):
        """``out`` (n_rows, N) <- solution; ``upper[-1]`` must be 0.  Inputs are not modified."""
        key = (diag.shape[1],) + tuple(a.__array_interface__["data"][0] for a in (diag, upper, rhs, out))
        ops = self.programs.get(key)
        if ops is None:
            if len(self.programs) >= 8:    # a chunk's column count only falls: old ones are dead
                self.programs.clear()
            ops = self.programs[key] = self._program(diag, upper, rhs, out)
        for op, args in ops:
            op(*args)
        return out

    def _program(self, diag, upper, rhs, out):
        """The operations of one solve as ``(function, arguments)``, every slice and view made
        once: the work arrays stay where they are, so a solve of the same arrays (a Newton step
        after a Newton step, the frames unchanged) only runs the list (a slice costs about as
        much Python time as a small array operation)."""
        N = diag.shape[1]
        ops = []
        systems = [(diag, upper, rhs)]
        signs = [1.0]              # the super-diagonal kept at each level is sign * e (see below)
        for (rows, half), flat in zip(self.levels, self.buffers):
            D, E, R = systems[-1]
            D1, E1, R1, _, p_left, p_right, tmp = (b[:half * N].reshape(half, N) for b in flat)
            right = (rows - 1) // 2           # odd rows that have a right neighbour
            # p_left = E[i-1] / d[i-1], p_right = E[i] / d[i+1] (0 when there is none), with E the
            # kept sign * e: the a_left, a_right above are -sign p_left, -sign p_right.  So
            # a e = -p E exactly (sign^2 = 1), a r = -sign p r, and e' = -p_right E[i+1] is
            # kept as p_right E[i+1] (sign -1): the same bits as negating a, one call fewer each.
            add_r = np.add if signs[-1] < 0 else np.subtract
            ops += [(np.divide, (E[0:2 * half:2], D[0:2 * half:2], p_left)),
                    (np.divide, (E[1:2 * right:2], D[2:2 * right + 1:2], p_right[:right])),
                    (np.multiply, (p_left, E[0:2 * half:2], tmp)),
                    (np.subtract, (D[1::2], tmp, D1)),
                    (np.multiply, (p_right[:right], E[1:2 * right:2], tmp[:right])),
                    (np.subtract, (D1[:right], tmp[:right], D1[:right])),
                    (np.multiply, (p_right[:right], E[2:2 * right + 1:2], E1[:right])),
                    (np.copyto, (E1[right:], 0.0)),
                    (np.multiply, (p_left, R[0:2 * half:2], tmp)),
                    (add_r, (R[1::2], tmp, R1)),
                    (np.multiply, (p_right[:right], R[2:2 * right + 1:2], tmp[:right])),
                    (add_r, (R1[:right], tmp[:right], R1[:right]))]
            systems.append((D1, E1, R1))
            signs.append(-1.0)
        # the last system has one row; back up, recovering the even rows of each level
        D, _, R = systems[-1]
        x_odd = self.buffers[-1][3][:N].reshape(1, N) if self.levels else out
        ops.append((np.divide, (R, D, x_odd)))
        for level in range(len(self.levels) - 1, -1, -1):
            rows, half = self.levels[level]
            D, E, R = systems[level]
            x = out if level == 0 else self.buffers[level - 1][3][:rows * N].reshape(rows, N)
            tmp = self.buffers[level][6][:half * N].reshape(half, N)
            evens = (rows + 1) // 2
            sub_e = np.subtract if signs[level] > 0 else np.add     # - e x, with E = sign e
            ops += [(np.copyto, (x[1::2], x_odd)),
                    (np.copyto, (x[0::2], R[0::2])),
                    (np.multiply, (E[1:2 * (evens - 1):2], x_odd[:evens - 1], tmp[:evens - 1])),
                    (sub_e, (x[2::2], tmp[:evens - 1], x[2::2])),
                    (np.multiply, (E[0:2 * half:2], x_odd, tmp)),
                    (sub_e, (x[0:2 * half:2], tmp, x[0:2 * half:2])),
                    (np.divide, (x[0::2], D[0::2], x[0::2]))]
            x_odd = x
        return ops
