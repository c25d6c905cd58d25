"""Default solver: the non-negative least-squares answer of every frame, to float precision.

Problem, for each frame (a column ``m`` of M, ``A = fb.T`` of shape (n_mels, n_freqs))::

    minimise_s  1/2 ||A s - m||^2 + eps/2 ||s||^2     subject to  s >= 0

``eps`` is tiny (``EPS_REL * max_k (A A.T)[k, k]``): it selects, among the many exact
non-negative solutions of an underdetermined frame, the one of least norm (the smooth one, see
REFERENCE.md "Which non-negative solution"), and it moves the mel residual of a consistent frame by
about ``EPS_REL`` only.

Dual.  With ``s(mu) = max(A.T mu, 0)`` the problem is equivalent to minimising the strongly
convex, piecewise quadratic function of ``mu`` (n_mels values)::

    q(mu) = 1/2 ||max(A.T mu, 0)||^2 + eps/2 ||mu||^2 - m.mu
    F(mu) = grad q = A s(mu) + eps mu - m          (primal optimality: A s - m = -eps mu)
    J(mu) = A diag(A.T mu > 0) A.T + eps I         (a generalised Hessian)

Only adjacent triangles share bins, so ``J`` is TRIDIAGONAL: a Newton step costs
O(nnz(A) + n_mels), about ``2 n_freqs + 8 n_mels`` flops, and the state of one frame is
``mu`` plus a few n_mels vectors and a bit mask: small enough to stay on-chip (one warp's slice
of shared memory) for the whole solve.

Iteration (per frame; ``kernels/nnls.cu`` runs exactly this, one frame per warp)::

    e = exponent of max|m| (frexp);  m <- m 2^-e     # exact rescaling: s(c m) = c s(m)
    mu_0 = (A A.T + eps I)^-1 m        # a fixed system; s(mu_0) is torchaudio 2.x's lstsq+relu
    for it in 0, 1, ..., cap:          # cap = min(max_iter, step_bound(n_mels))
        t  = A.T mu;  s = max(t, 0);  d = (t > 0)
        F  = A s + eps mu - m;  kkt = ||F|| / ||m||
        if kkt <= tolerance_loss: stop                            (converged)
        if the last step was a full one and d is unchanged: stop  (exact: F = 0 up to rounding)
        if kkt <= FLOOR_KKT and kkt > FLOOR_RATIO * min(kkt of the last FLOOR_WINDOW
            iterates): stop                                       (rounding floor reached)
        if stalled (set by the previous step): stop
        if it == cap: stop                                        (ran out: warned)
        diag, upper = tridiag(A diag(d) A.T) + eps I
        delta = -J^-1 F                    # O(n_mels): Thomas (kernel), cyclic reduction (NumPy)
        u = A.T delta
        alpha = 1 if phi'(1) <= FULL_STEP_TIE |phi'(0)| (a full Newton step), else the root of
                phi'(a) = max(t + a u, 0).u + eps (mu + a delta).delta - m.delta  on (0, 1)
        mu += alpha delta
        stalled = alpha ||u|| <= tolerance_change ||s||           (the step moved nothing)
    return 2^e max(A.T mu, 0)

A frame is ``converged`` when its final ``kkt <= tolerance_loss``.  The rules guarantee that every
frame stops: the rounding-floor rule ends the cycles a frame can fall into once its KKT residual
is at rounding level (Newton steps that move ``s`` by ~1e-8 and trade the last digits of ``F``;
the dual is ill-conditioned by design, ``cond(J) ~ 1 / EPS_REL``, so the floor is ~1e-16 / EPS_REL
relative at worst), and ``step_bound`` caps the rest (measured: at most 28 steps to 1e-5 on real,
signed, log-scaled and random frames of the three workloads).  In the global phase ``||F||`` is
not monotone (the line search decreases ``q``, not ``||F||``), which is why the floor rule only
applies below ``FLOOR_KKT``.

Line search.  ``phi'(a)``, the derivative of ``q`` along ``delta``, is continuous, increasing
(``q`` is strongly convex) and piecewise linear: bin ``j`` switches on or off at its breakpoint
``b_j = -t_j / u_j``, and only the bins whose sign differs between ``t`` and ``t + u`` have a
breakpoint in ``(0, 1)``.  The search is EXACT: it returns the root of ``phi'``, the minimiser of
``q`` along the step, from those few crossing bins (NumPy: sum the pieces' changes by the
breakpoints' binary exponent, which picks the bucket holding the root, then sort that bucket's
breakpoints and find the piece where ``phi'`` changes sign; the kernel: a secant step inside the
bracket, then the root of the linear piece holding it, a handful of passes).  The full
step is taken when ``phi'(1) <= 1e-12 |phi'(0)|``: at a converged Newton step ``phi'(1)`` is zero
up to rounding, and the sign of a rounding-level value must not pick the step.  On a piece where
the active set is right the Newton step is exact, so the iteration ends in a handful of steps
(2-10 on average, at most ~20, on real audio).

Prior (the proximal variant, ``prior=``).  Given per-bin ``c`` (a centre, in the units of ``s``)
and ``v > 0`` (a spread), the same machinery solves::

    minimise_s  1/2 ||A s - m||^2 + eps/2 sum_j (s_j - c_j)^2 / v_j     subject to  s >= 0

i.e. among the (near) exact non-negative solutions, the one nearest to ``c`` in the metric
``diag(1 / v)`` instead of the least-norm one.  Everything above holds with ``t = A.T mu``
replaced by ``z = c + v t``::

    s(mu) = max(c + v A.T mu, 0);   F = A s + eps mu - m;   J = A diag(v (z > 0)) A.T + eps I
    mu_0  = (A diag(v) A.T + eps I)^-1 (m - A c)        (the exact answer if no bin clamps)
    phi'(a) = max(z + a v u, 0).u + c0 + a c1;   stalled = alpha ||v u|| <= tolerance_change ||s||

``J`` is tridiagonal still, the line search exact still (breakpoints ``-z_j / (v_j u_j)``).  ``c``
is rescaled with ``m`` (``s(2^k m, 2^k c) = 2^k s(m, c)``); ``v`` is scale-free: each frame's is
divided by its maximum (all ones where that is 0) and ``floor`` added, so no bin is frozen and
``eps`` keeps its meaning.  A frame with ``m = 0`` gets ``max(c, 0)`` on the bins no triangle
covers and 0 elsewhere, the exact answer.  ``c = 0`` and ``v = 1`` is the plain problem; without a
prior every operation above is the plain iteration's, bit for bit.  ``cumel.admm`` uses it as its
mel step (``cap = 0``: ``s(mu_0)``, the weighted projection clamped at 0).

The arithmetic is float64 for float32 and float64 input alike (a frame's state is tiny; the
dual is ill-conditioned by design), and the result is cast to the input dtype.  Frames are
columns (vectors along axis 0, as in a mel spectrogram), so every step is a vectorised operation
across frames and no operation mixes columns: a frame gives the same bits alone or in any batch,
in any chunk and on any worker thread, and stopped frames drop out of the working set (once
``1 / COMPACT_DEAD`` of it has stopped; until then they ride along, their results already
written).  The NumPy loop keeps ``t`` and ``J`` between steps (``t += alpha u``; ``J`` plus the
bins that switched), summing both afresh every 32 steps, where the kernel computes them each
step: the same iterates up to rounding.
"""
from __future__ import annotations

import collections
import queue

import numpy as np

from .._threads import map_chunks
from ._rows import col_sum

EPS_REL = 1e-9
FULL_STEP_TIE = 1e-12            # phi'(1) within this fraction of |phi'(0)|: a full step
FLOOR_KKT = 1e-6                  # the rounding-floor rule applies below this relative KKT residual
FLOOR_RATIO = 0.5                 # ... and stops a frame that did not halve it ...
FLOOR_WINDOW = 3                  # ... within the last FLOOR_WINDOW iterates
CHUNK_ELEMENTS = 1 << 19          # n_freqs x frames per work array: 4 MB of float64
THREAD_CHUNK_ELEMENTS = 1 << 20   # ... when the frames are shared between threads
MIN_CHUNK_ELEMENTS = 1 << 19      # smallest chunk when the frames are shared between threads
CHUNKS_PER_WORKER = 4             # chunks a thread, where the batch is large enough
T_REFRESH = 32                    # t = A.T mu computed afresh every this many steps (else t += alpha u)
J_REFRESH = 32                    # J summed afresh every this many steps (else updated)
COMPACT_DEAD = 16                 # stopped frames leave the work arrays once 1/16 of them


def step_bound(n_mels):
    """Newton steps a frame may take whatever ``max_iter`` says: ``4 n_mels + 32``.

    Each step of the semismooth Newton method changes the active set or ends the solve; in
    practice a frame needs 2-28 steps (module docstring).  The bound only keeps a pathological
    frame from holding its warp (or the CPU loop) for ``max_iter = 100000`` steps.
    """
    return 4 * int(n_mels) + 32


class Prior:
    """The centre and spread of the proximal variant (module docstring, "Prior").

    Parameters
    ----------
    center : ndarray, shape (B, n_freqs, T)
        ``c``, any real dtype and strides; read only.
    spread : ndarray, shape (B, n_freqs, T)
        ``v >= 0`` up to a per-frame factor (each frame's is divided by its maximum); read only.
    floor : float, default 0.0
        Added to the normalised spread.
    """

    def __init__(self, center, spread, floor=0.0):
        self.center, self.spread, self.floor = center, spread, float(floor)


class NnlsPlan:
    """Per-filterbank constants of the nnls iteration, computed once.

    The NumPy loop keeps its bin vectors (``t``, ``s``, ``d``, ``u``; n_freqs rows, one column a
    frame) in RUN-MAJOR order: the mels sorted by the length of their bin run (the bins with
    ``lo == k``), longest first, and the bins listed by their position in the run: first the
    first bin of every run, then the second bins, and so on.  Block ``r`` (rows
    ``offsets[r]:offsets[r + 1]``) holds the r-th bins, and the runs that long are its first
    rows, in the sorted order.  A sum over every run (the products ``A x``) is then a handful of
    contiguous slice additions, each run's bins added in bin order (the kernels' order).

    Attributes
    ----------
    eps : float
        Regulariser (absolute).
    w : tuple of ndarray
        ``(lo, hi, w_lo, w_hi)`` of :class:`cumel.filterbank.SparseMel` in float64 (bin order).
    order, inverse : ndarray of intp, shape (n_freqs,)
        Run-major position -> bin, and bin -> run-major position.
    offsets : tuple of int
        Block boundaries (``len = longest run + 1``).
    lo, hi : ndarray of intp, shape (n_freqs,)
        ``lo`` and ``min(lo + 1, n_mels - 1)`` of the bins in run-major order.
    weights : dict of ndarray, shape (n_freqs, 1)
        ``w_lo``, ``w_hi``, ``w_lo2``, ``w_hi2``, ``w_lohi`` (products of the two weights) in
        run-major order, as columns broadcast over frames.
    bin_weights : dict of ndarray, shape (n_freqs,)
        The same, flat (indexed by bin).
    sorted_to_mel : ndarray of intp, shape (n_mels,)
        Position of each mel in the sorted order (``sums_sorted[sorted_to_mel]`` is in mel
        order).
    start_diag, start_upper : ndarray, shape (n_mels,)
        Diagonal and super-diagonal of ``A A.T + eps I``, the start's system (NumPy solves it
        by cyclic reduction, as the Newton steps' systems).
    start_inv_pivot, start_upper_scaled : ndarray, shape (n_mels,)
        Its Thomas factorisation, ``1 / pivot_k`` and ``upper_k / pivot_k`` (the kernels').
    """

    def __init__(self, sparse):
        self.sparse = sparse
        self.n_mels = sparse.n_mels
        self.w = sparse.arrays(np, np.float64)
        lo, hi, w_lo, w_hi = self.w
        blocks = sparse.run_rows
        self.order = np.concatenate(blocks).astype(np.intp) if blocks else np.zeros(0, np.intp)
        self.inverse = np.argsort(self.order, kind="stable").astype(np.intp)
        self.offsets = tuple(int(v) for v in np.cumsum([0] + [b.size for b in blocks]))
        self.lo, self.hi = lo[self.order], hi[self.order]
        bin_weights = {"w_lo": w_lo, "w_hi": w_hi, "w_lo2": w_lo * w_lo, "w_hi2": w_hi * w_hi,
                       "w_lohi": w_lo * w_hi}
        self.weights = {k: np.ascontiguousarray(v[self.order][:, None]) for k, v in bin_weights.items()}
        self.bin_weights = {k: v[:, 0] for k, v in self.weights.items()}   # (n_freqs,) views
        self.sorted_to_mel = sparse.run_inverse
        diag, upper = sparse.tridiag(np.ones(sparse.n_freqs), np, self.w)
        self.eps = EPS_REL * float(diag.max()) if diag.max() > 0 else EPS_REL
        self.start_upper = upper
        self.start_diag = diag + self.eps
        self.start_inv_pivot, self.start_upper_scaled = _thomas_factor(diag + self.eps, upper)

    def run_sums(self, x, out):
        """Sum of each bin run of the run-major ``x`` (n_freqs, N) into ``out`` (n_mels, N), in
        the sorted order: ``out[i] = x[first bin of run i] + x[second bin] + ...``."""
        off = self.offsets
        first = off[1] - off[0] if len(off) > 1 else 0
        out[first:] = 0.0
        if first:
            np.copyto(out[:first], x[:first])
        for r in range(1, len(off) - 1):
            out[:off[r + 1] - off[r]] += x[off[r]:off[r + 1]]
        return out

    def to_mel_order(self, sums_sorted, out):
        """``out[k] = sums_sorted[sorted position of mel k]`` (n_mels, N)."""
        return np.take(sums_sorted, self.sorted_to_mel, axis=0, out=out, mode="clip")


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
            if len(self.programs) >= 64:
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


def solve(plan, m, *, max_iter, tolerance_loss, tolerance_change):
    """Solve every frame (column) of ``m``; see :func:`solve_into` (this returns float64).

    Parameters
    ----------
    plan : NnlsPlan
    m : ndarray, shape (n_mels, N)
        One mel frame per column, any real dtype (computed in float64); not modified.

    Returns
    -------
    s : ndarray, shape (n_freqs, N), float64
    iterations : ndarray of int64, shape (N,)
    kkt : ndarray, shape (N,)
    """
    m = np.asarray(m)
    s = np.empty((1, plan.sparse.n_freqs, m.shape[1]))
    iterations, kkt = solve_into(plan, m[None], s, max_iter=max_iter,
                                 tolerance_loss=tolerance_loss, tolerance_change=tolerance_change)
    return s[0], iterations[0], kkt[0]


def solve_into(plan, mel, out, *, max_iter, tolerance_loss, tolerance_change, workers=1,
               progress=None, prior=None, scratch=None):
    """Solve every frame of ``mel`` into ``out``, a cache-sized chunk of frames at a time.

    Memory: ``out`` is the only array that grows with the batch (besides two numbers a frame);
    each chunk being solved has one set of work arrays (at most ``workers`` sets, allocated once
    per call, or kept in ``scratch`` between calls), into which it gathers its frames (in
    float64), solves them and from which it writes them into ``out`` in ``out.dtype``.  Chunks
    cannot change a result, since no operation mixes frames, so neither can the number of
    threads that solve them, nor which set of work arrays a chunk gets.

    Parameters
    ----------
    plan : NnlsPlan
    mel : ndarray, shape (B, n_mels, T)
        Frames ``mel[b, :, t]``, any real dtype and strides; read only.
    out : ndarray, shape (B, n_freqs, T)
        Written, every element; its dtype is the result's.
    max_iter : int
        Newton steps allowed per frame (at most :func:`step_bound` are taken).
    tolerance_loss : float
        A frame stops when ``||F|| <= tolerance_loss * ||m||`` (relative KKT residual; equals
        the relative mel residual for a consistent frame, up to ``EPS_REL``).
    tolerance_change : float
        A frame also stops when its step moves ``t = A.T mu`` by at most
        ``tolerance_change * ||max(t, 0)||`` (no further progress at this precision).
    workers : int
        Threads solving chunks at once (NumPy releases the GIL inside its loops); 1 solves in
        the calling thread.
    progress : callable or None
        Called with the number of frames of each chunk solved (from the worker threads).
    prior : Prior or None
        Solve the proximal variant (module docstring, "Prior") with this centre and spread,
        gathered chunk by chunk like ``mel``; None: the plain problem.
    scratch : dict or None
        Keeps the work arrays between calls of the same plan and shapes (a caller that solves
        again and again, as the ADMM's mel step, holds one dict): fresh multi-megabyte arrays
        cost their page faults on every call.  None: allocated for this call only.

    Returns
    -------
    iterations : ndarray of int64, shape (B, T)
        Newton steps taken per frame.
    kkt : ndarray, shape (B, T)
        Final ``||F|| / ||m||`` per frame (0 for an all-zero frame).
    """
    B, _, T = mel.shape
    cap = min(int(max_iter), step_bound(plan.n_mels))
    iterations = np.zeros((B, T), dtype=np.int64)
    kkt = np.zeros((B, T))
    chunks = chunk_bounds(B * T, plan.sparse.n_freqs, workers, uniform=cap == 0)
    if not chunks:
        return iterations, kkt
    capacity = max(b - a for a, b in chunks)
    works = _work_sets(scratch, plan, capacity, prior is not None)
    errors = np.geterr()          # the caller's floating-point error handling, for every thread

    def run(bounds):
        with np.errstate(**errors):
            solve_chunk(bounds)

    def solve_chunk(bounds):
        work = works.take()
        try:
            _solve_chunk(work, bounds)
        finally:
            works.give_back(work)

    def _solve_chunk(work, bounds):
        a, b = bounds
        n = b - a
        m = work.mel_view("m", n)
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            np.copyto(m[:, frames], mel[b_index, :, t0:t1], casting="unsafe")
            if prior is not None:       # bins in the plan's run-major order
                c = work.bin_view("c", n)
                c[:, frames] = prior.center[b_index, :, t0:t1][plan.order]
                v = work.bin_view("v", n)
                if prior.spread is prior.center:
                    np.copyto(v[:, frames], c[:, frames])
                else:
                    v[:, frames] = prior.spread[b_index, :, t0:t1][plan.order]
        s, it, kk = _solve_frames(plan, work, n, cap, tolerance_loss, tolerance_change,
                                  None if prior is None else prior.floor)
        for frames, b_index, t0, t1 in _slabs(a, b, T):
            out[b_index, :, t0:t1] = s[:, frames]
            iterations[b_index, t0:t1] = it[frames]
            kkt[b_index, t0:t1] = kk[frames]
        if progress is not None:
            progress(n)

    map_chunks(run, chunks, workers)
    return iterations, kkt


class _WorkSets:
    """Sets of work arrays for chunks of up to ``capacity`` frames: a chunk takes a free one (or
    a new one: at most as many as chunks run at once) and gives it back."""

    def __init__(self, plan, capacity, prior):
        self.key = (plan, capacity, prior)
        self.free = queue.SimpleQueue()

    def take(self):
        try:
            return self.free.get_nowait()
        except queue.Empty:
            return _Work(*self.key)

    def give_back(self, work):
        self.free.put(work)


_KEPT = collections.OrderedDict()   # work arrays kept between calls, for the last few plans
KEPT_PLANS = 2


def _work_sets(scratch, plan, capacity, prior):
    """The caller's kept :class:`_WorkSets` when it fits (same plan and prior, enough capacity),
    else a new one, kept in ``scratch`` if given, else in this module for the next call on the
    same plan (at most ``KEPT_PLANS`` plans): a call on a clip after a call on a clip then finds
    its work arrays with their pages already mapped (on a virtual machine a page fault costs a
    few microseconds, and one chunk's arrays are thousands of pages)."""
    if scratch is None:
        key = (id(plan), prior)
        kept = _KEPT.get(key)
        if kept is None or kept.key[0] is not plan or kept.key[1] < capacity:
            kept = _KEPT[key] = _WorkSets(plan, capacity, prior)
        _KEPT.move_to_end(key)
        while len(_KEPT) > KEPT_PLANS:
            _KEPT.popitem(last=False)
        return kept
    kept = scratch.get("nnls")
    if kept is None or kept.key[0] is not plan or kept.key[2] != prior or kept.key[1] < capacity:
        kept = scratch["nnls"] = _WorkSets(plan, capacity, prior)
    return kept


def _slabs(a, b, T):
    """Frames ``a <= f < b`` of a (B, ., T) batch (f = b T + t) as runs within one batch item:
    ``(slice of the chunk's columns, b, t0, t1)``."""
    f = a
    while f < b:
        b_index, t0 = divmod(f, T)
        t1 = min(T, t0 + (b - f))
        yield slice(f - a, f - a + t1 - t0), b_index, t0, t1
        f += t1 - t0


def chunk_bounds(n_frames, n_freqs, workers, uniform=False):
    """``[(start, stop), ...]``: near-equal runs of frames, at most ``CHUNK_ELEMENTS // n_freqs``
    a chunk; with several threads, at most ``THREAD_CHUNK_ELEMENTS // n_freqs`` and at least
    ``CHUNKS_PER_WORKER`` chunks a thread where that leaves ``MIN_CHUNK_ELEMENTS`` a chunk (frames
    differ in cost: several chunks a thread even out the load; but a smaller chunk makes every
    NumPy call shorter, and threads hand the GIL back and forth around every call: measured, a
    clip of a few hundred frames split between two threads ran slower than on one, so a batch
    smaller than two chunks runs in the calling thread, and threads get twice the chunk of one
    thread, which ran 2-11 % faster on two threads than the single thread's chunk).  With
    several threads and more chunks than threads, the number of chunks is a multiple of
    ``workers`` (13 chunks on two threads left one thread the last chunk alone, 1/13 of the
    batch; 14 slightly smaller ones ran about 5 % faster).
    ``uniform``: every frame costs the same (no Newton step, ``max_iter = 0``), so one chunk a
    thread is enough, however small."""
    chunk = max(1, CHUNK_ELEMENTS // n_freqs)
    if workers > 1 and uniform:
        chunk = min(chunk, max(1, -(-n_frames // workers)))
    elif workers > 1:
        smallest = max(1, MIN_CHUNK_ELEMENTS // n_freqs)
        chunk = max(1, THREAD_CHUNK_ELEMENTS // n_freqs)
        chunk = min(chunk, max(smallest, -(-n_frames // (CHUNKS_PER_WORKER * workers))))
    n_chunks = -(-n_frames // chunk)
    if workers > 1 and not uniform and n_chunks > workers:
        n_chunks = -(-n_chunks // workers) * workers
    edges = np.linspace(0, n_frames, n_chunks + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class _Work:
    """One thread's work arrays for chunks of up to ``capacity`` frames, allocated once.

    Every array a Newton step touches is a view of these (the frames still running are the
    first columns, contiguous): the loop allocates nothing the size of a chunk, which matters
    as much as the arithmetic (a fresh multi-megabyte temporary costs its page faults each time).
    Bin arrays are in the plan's run-major order.
    """

    _BIN_FLOAT = ("t", "s", "u", "x", "y", "s_out")
    _BIN_PRIOR = ("c", "v", "w", "w_cols")     # centre, spread, v u and its searched columns
    _BIN_BOOL = ("d", "d_prev", "d_one", "cross")
    _MEL = ("m", "mu", "F", "delta", "tmp", "diag", "upper", "sums", "sums_hi", "j_diag", "j_upper")

    def __init__(self, plan, capacity, prior=False):
        self.n_freqs, self.n_mels, self.capacity = plan.sparse.n_freqs, plan.n_mels, capacity
        size_bins, size_mels = self.n_freqs * capacity, self.n_mels * capacity
        names = self._BIN_FLOAT + (self._BIN_PRIOR if prior else ())
        self.flat = {name: np.empty(size_bins) for name in names}
        self.flat.update({name: np.empty(size_bins, dtype=bool) for name in self._BIN_BOOL})
        self.flat.update({name: np.empty(size_mels) for name in self._MEL})
        self.tridiag = _CyclicReduction(self.n_mels, capacity)
        self.views = {}               # (name, columns) -> view; see bin_view

    def bin_view(self, name, n):
        """The first ``n`` columns of bin array ``name``: (n_freqs, n), made once per ``n``."""
        view = self.views.get((name, n))
        if view is None:
            view = self.views[name, n] = self.flat[name][:self.n_freqs * n].reshape(self.n_freqs, n)
        return view

    def mel_view(self, name, n):
        """The first ``n`` columns of mel array ``name``: (n_mels, n), made once per ``n``."""
        view = self.views.get((name, n))
        if view is None:
            view = self.views[name, n] = self.flat[name][:self.n_mels * n].reshape(self.n_mels, n)
        return view

    def run_sums(self, plan, n):
        """:meth:`NnlsPlan.run_sums` of ``x`` into ``sums`` (``n`` columns), the same additions
        on slices made once per ``n``."""
        blocks = self.views.get(("run_sums", n))
        if blocks is None:
            x, out, off = self.bin_view("x", n), self.mel_view("sums", n), plan.offsets
            first = off[1] - off[0] if len(off) > 1 else 0
            blocks = self.views["run_sums", n] = (
                out[:first], x[:first], out[first:],
                [(out[:off[r + 1] - off[r]], x[off[r]:off[r + 1]]) for r in range(1, len(off) - 1)])
        out_first, x_first, out_rest, adds = blocks
        out_rest.fill(0.0)
        np.copyto(out_first, x_first)
        for total, part in adds:
            np.add(total, part, out=total)
        return self.mel_view("sums", n)

    def compact(self, names, n_old, keep):
        """Keep the columns ``keep`` of the work arrays ``names``: (rows, n_old) ->
        (rows, keep.size), through a scratch array of the same kind (``y``, ``cross`` or
        ``delta``, free whenever frames are dropped).  Returns the new views."""
        views = []
        for name in names:
            flat = self.flat[name]
            view = self.bin_view if flat.size == self.n_freqs * self.capacity else self.mel_view
            scratch = "delta" if view == self.mel_view else ("cross" if flat.dtype == bool else "y")
            kept = np.take(view(name, n_old), keep, axis=1, out=view(scratch, keep.size),
                           mode="clip")
            new = view(name, keep.size)
            np.copyto(new, kept)
            views.append(new)
        return views


def _run_sums_into(plan, work, x, weight, out):
    """``out`` (n_mels, n), mel order <- ``x * plan.weights[weight]`` summed over each mel's bin
    run, for run-major ``x`` (n_freqs, n); ``work``'s ``x`` and ``sums`` are scratch."""
    n = x.shape[1]
    np.multiply(x, plan.weights[weight], out=work.bin_view("x", n))
    return plan.to_mel_order(work.run_sums(plan, n), out)


def _own_and_below_into(plan, work, x, own, below, out):
    """``out[k]`` <- the ``own``-weighted sum over mel k's bin run plus the ``below``-weighted
    sum over the run below it (``work``'s ``sums_hi`` is scratch too)."""
    _run_sums_into(plan, work, x, own, out)
    lower = _run_sums_into(plan, work, x, below, work.mel_view("sums_hi", x.shape[1]))
    out[1:] += lower[:-1]


def _tridiag_into(plan, work, d, diag, upper):
    """``diag``, ``upper`` <- the tridiagonal ``A diag(d) A.T`` of run-major bin weights ``d``
    (n_freqs, n): ``diag_k`` sums ``w_lo^2 d`` over mel k's run and ``w_hi^2 d`` over the run
    below, ``upper_k`` sums ``w_lo w_hi d`` over mel k's run."""
    _own_and_below_into(plan, work, d, "w_lo2", "w_hi2", diag)
    _run_sums_into(plan, work, d, "w_lohi", upper)


def _tridiag_update(plan, work, d, d_prev, diag, upper):
    """``diag``, ``upper`` (n_mels, n), the tridiagonal ``A diag(d_prev) A.T``, <- that of
    ``A diag(d) A.T``: the weights of the bins that came on added, of those that went off
    subtracted (one at a time, in bin order: a frame's bits do not depend on the others).
    Returns, per frame, whether any bin changed.

    The same sums as :func:`_tridiag_into` up to rounding: measured, the kept J drifts from a
    fresh sum by at most 1e-15 of its largest entry (3e-7 of ``eps``) over 20 steps on signed
    frames; the caller sums afresh every ``J_REFRESH`` steps all the same.
    """
    n = d.shape[1]
    flip = np.flatnonzero(np.not_equal(d, d_prev, out=work.bin_view("cross", n)))
    bins, cols = np.divmod(flip, n)
    went_off = ~d.ravel()[flip]
    own = plan.lo[bins] * n + cols                 # flat (mel, frame) of the bin's own run
    for name, at, out in (("w_lo2", own, diag), ("w_hi2", plan.hi[bins] * n + cols, diag),
                          ("w_lohi", own, upper)):
        w = plan.bin_weights[name][bins]
        np.negative(w, out=w, where=went_off)
        np.add.at(out.reshape(-1), at, w)
    return np.bincount(cols, minlength=n) > 0


def _matvec_into(plan, work, s, out):
    """``out`` <- ``A s`` for run-major ``s`` (n_freqs, n): the ``w_lo`` part of each mel's bin
    run plus the ``w_hi`` part of the run below it."""
    _own_and_below_into(plan, work, s, "w_lo", "w_hi", out)


def _solve_frames(plan, work, N, cap, tolerance_loss, tolerance_change, floor=None):
    """The iteration of the module docstring on the ``N`` frames in ``work``'s ``m`` (float64,
    overwritten); with ``floor`` not None, the prior variant with ``work``'s ``c`` and ``v``
    (run-major, overwritten: rescaled and normalised).

    Returns ``s`` (n_freqs, N) in bin order (a view of ``work``'s ``y``), ``iterations`` and
    ``kkt`` (N,).  The frames still running are the first columns of the work arrays; a frame
    that stops writes its ``s`` (already computed from its final ``mu``) and leaves them.
    """
    eps = plan.eps
    lo, hi, wt = plan.lo, plan.hi, plan.weights
    if len(work.views) > 4096:                        # views of earlier calls' column counts
        work.views.clear()
    m, tmp = work.mel_view("m", N), work.mel_view("tmp", N)
    s_out = work.bin_view("s_out", N)
    # Exact rescaling by a power of two: every frame's largest |m| lands in [0.5, 1), so no
    # norm under- or overflows and s(c m) = c s(m) whatever the scale c.
    np.abs(m, out=tmp)
    _, exponent = np.frexp(tmp.max(axis=0))
    np.ldexp(m, -exponent, out=m)
    np.multiply(m, m, out=tmp)
    m_norm = np.sqrt(col_sum(tmp))
    iterations = np.zeros(N, dtype=np.int64)
    kkt = np.zeros(N)
    s_out[...] = 0.0
    prior = floor is not None
    priors = ["c", "v"] if prior else []
    if prior:
        c, v = work.bin_view("c", N), work.bin_view("v", N)
        np.ldexp(c, -exponent, out=c)                 # the same scale as m
        v_max = v.max(axis=0)
        v /= np.where(v_max > 0, v_max, 1.0)
        v[:, ~(v_max > 0)] = 1.0
        v += floor
        # m = 0: s = max(c, 0) on the bins no triangle covers, 0 elsewhere (exact)
        silent = np.flatnonzero(~(m_norm > 0))
        if silent.size:
            free = (wt["w_lo"] == 0) & (wt["w_hi"] == 0)
            s_out[:, silent] = np.maximum(c[:, silent], 0.0) * free
    frames = np.flatnonzero(m_norm > 0)               # chunk column of each running frame
    n = frames.size
    if n < N and n:
        m, *_ = work.compact(["m"] + priors, N, frames)
        m_norm = m_norm[frames]
    if n and not prior:
        # mu_0 = (A A.T + eps I)^-1 m by the Newton steps' cyclic reduction (a Thomas sweep is
        # three operations a row, too many small calls: threads would hand the GIL over at each)
        diag, upper = work.mel_view("diag", n), work.mel_view("upper", n)
        np.copyto(diag, plan.start_diag[:, None])
        np.copyto(upper, plan.start_upper[:, None])
        mu = work.tridiag.solve(diag, upper, m, work.mel_view("mu", n))
    elif n:
        # mu_0 = (A diag(v) A.T + eps I)^-1 (m - A c): the J below with every bin active
        c, v = work.bin_view("c", n), work.bin_view("v", n)
        diag, upper, rhs = (work.mel_view(name, n) for name in ("diag", "upper", "F"))
        _tridiag_into(plan, work, v, diag, upper)
        diag += plan.eps
        _matvec_into(plan, work, c, rhs)
        np.subtract(m, rhs, out=rhs)
        mu = work.tridiag.solve(diag, upper, rhs, work.mel_view("mu", n))
    # exact[i]: the last step of frame i was a full Newton step; if its active set is unchanged,
    # F is zero up to rounding (Newton is exact on a piece of the piecewise linear F).
    exact = np.zeros(n, dtype=bool)
    recent = np.full((FLOOR_WINDOW, n), np.inf)      # kkt of the last FLOOR_WINDOW iterates
    stalled = np.zeros(n, dtype=bool)                 # the last step moved nothing: stop here
    live = np.ones(n, dtype=bool)                     # not stopped (columns of stopped frames ride along)
    n_live = n
    for it in range(cap + 1):
        if n == 0:
            break
        t, s, u, x = (work.bin_view(name, n) for name in ("t", "s", "u", "x"))
        d, d_prev = work.bin_view("d", n), work.bin_view("d_prev", n)
        F, tmp = work.mel_view("F", n), work.mel_view("tmp", n)
        # t = A.T mu, s = max(t, 0), d = (t > 0).  t is the last step's plus alpha u (below), two
        # passes over the bins where the product takes five, and computed afresh every
        # T_REFRESH steps: the same iterate up to rounding (the same Newton steps, measured).
        if it % T_REFRESH == 0:
            np.take(mu, lo, axis=0, out=t, mode="clip")
            t *= wt["w_lo"]
            np.take(mu, hi, axis=0, out=x, mode="clip")
            x *= wt["w_hi"]
            t += x
            if prior:                                     # z = c + v t, kept in t
                c, v = work.bin_view("c", n), work.bin_view("v", n)
                t *= v
                t += c
        np.greater(t, 0.0, out=d)
        np.maximum(t, 0.0, out=s)
        # F = A s + eps mu - m: the w_lo part of each mel's bin run, plus the w_hi part of the
        # run below it.  (Not J mu - m, equal in exact arithmetic: where mu is large, on frames
        # no non-negative spectrum fits, its rounding would no longer describe the s returned.)
        _matvec_into(plan, work, s, F)
        np.multiply(mu, eps, out=tmp)
        F += tmp
        F -= m
        np.multiply(F, F, out=tmp)
        rel = np.sqrt(col_sum(tmp)) / m_norm
        # a non-finite frame stops too (the transform then raises): it can never meet a rule
        done = (rel <= tolerance_loss) | ~np.isfinite(rel) | (it == cap) | stalled
        done |= (rel <= FLOOR_KKT) & (rel > FLOOR_RATIO * recent.min(axis=0))
        recent[it % FLOOR_WINDOW] = rel
        j_diag, j_upper = work.mel_view("j_diag", n), work.mel_view("j_upper", n)
        changed = None                            # per frame: d differs from the last step's
        if not prior and it % J_REFRESH:
            changed = _tridiag_update(plan, work, d, d_prev, j_diag, j_upper)
        check = np.flatnonzero(exact & ~done & live)  # a full step last time: the same active set?
        if check.size:
            if changed is None:
                done[check] = (d[:, check] == d_prev[:, check]).all(axis=0)
            else:
                done[check] = ~changed[check]
        done &= live
        if done.any():
            gone = np.flatnonzero(done)
            s_out[:, frames[gone]] = s[:, gone]
            kkt[frames[gone]] = rel[gone]
            live[gone] = False
            n_live -= gone.size
            if n_live == 0:
                break
            # Drop the stopped frames from the work arrays once they are 1 / COMPACT_DEAD of
            # them (or one is not finite): until then they ride along, a few per cent of a
            # step, where moving the others costs about five passes over the bins each time.
            if (n - n_live) * COMPACT_DEAD >= n or not np.isfinite(rel[gone]).all():
                keep = np.flatnonzero(live)
                frames, m_norm, rel, exact = frames[keep], m_norm[keep], rel[keep], exact[keep]
                recent, live = recent[:, keep], live[keep]
                t, mu, m, F, *_ = work.compact(["t", "mu", "m", "F", "j_diag", "j_upper"] + priors,
                                               n, keep)
                n = keep.size
                # s and d again from the kept t: one pass each, where moving them took two
                s, d = work.bin_view("s", n), work.bin_view("d", n)
                np.greater(t, 0.0, out=d)
                np.maximum(t, 0.0, out=s)
                u, x, d_prev = (work.bin_view(name, n) for name in ("u", "x", "d_prev"))
                tmp = work.mel_view("tmp", n)
        running = frames if n_live == n else frames[live]
        iterations[running] += 1
        kkt[running] = rel if n_live == n else rel[live]
        # J = A diag(d) A.T + eps I (tridiagonal): diag_k sums w_lo^2 over the active bins of
        # mel k's run and w_hi^2 over the run below; upper_k sums w_lo w_hi over mel k's run.
        # Without a prior, a step changes d on a few bins only: J - eps I is the last step's
        # plus theirs (above, _tridiag_update), summed afresh every J_REFRESH steps.
        j_diag, j_upper = work.mel_view("j_diag", n), work.mel_view("j_upper", n)
        if prior:                                     # J = A diag(v d) A.T + eps I
            v, dv = work.bin_view("v", n), work.bin_view("w", n)
            np.multiply(v, d, out=dv)
            _tridiag_into(plan, work, dv, j_diag, j_upper)
        elif changed is None:
            _tridiag_into(plan, work, d, j_diag, j_upper)
        diag, upper = np.add(j_diag, eps, out=work.mel_view("diag", n)), j_upper
        # delta = -J^-1 F
        delta = work.tridiag.solve(diag, upper, F, work.mel_view("delta", n))
        np.negative(delta, out=delta)
        # u = A.T delta
        np.take(delta, lo, axis=0, out=u, mode="clip")
        u *= wt["w_lo"]
        np.take(delta, hi, axis=0, out=x, mode="clip")
        x *= wt["w_hi"]
        u += x
        # Stalled: the step moves the unclamped spectrum t = A.T mu by a negligible amount
        # compared with the answer s = max(t, 0). (Not compared with ||t||: on an inconsistent
        # frame the clamped bins of t grow like residual / eps and dwarf any useful step.)
        # The frame stops at the top of the next pass, so that its kkt is the returned iterate's.
        step = None                                   # z moves by alpha * (v u) with a prior
        if prior:
            step = np.multiply(work.bin_view("v", n), u, out=work.bin_view("w", n))
        np.multiply(s, s, out=x)
        s_norm = np.sqrt(col_sum(x))
        np.multiply(u if step is None else step, u if step is None else step, out=x)
        u_norm = np.sqrt(col_sum(x))
        alpha, full = _line_search(work, n, mu, delta, m, F, eps, step)
        delta *= alpha
        mu += delta
        upd = u if step is None else step             # t (z with a prior) at the new mu
        upd *= alpha
        t += upd
        exact = full
        np.copyto(d_prev, d)
        stalled = alpha * u_norm <= tolerance_change * s_norm
    s_bins = np.take(s_out, plan.inverse, axis=0, out=work.bin_view("y", N), mode="clip")
    np.ldexp(s_bins, exponent, out=s_bins)
    return s_bins, iterations, kkt


def _line_search(work, n, mu, delta, m, F, eps, step=None):
    """Step length along the Newton direction, every frame's own: ``(alpha, full)``.

    ``phi'(a) = max(t + a step, 0).u + c0 + a c1`` (``step`` None means ``u``; with a prior it
    is ``v u`` and ``t`` holds ``z``) with ``c0 = (eps mu - m).delta`` and
    ``c1 = eps delta.delta``.  Full step (``alpha = 1``, ``full`` True) where
    ``phi'(1) <= FULL_STEP_TIE |phi'(0)|``, ``phi'(0) = F.delta``; elsewhere the exact root of
    ``phi'`` on ``(0, 1)`` (:func:`_root_of_dphi`).  Reads ``t``, ``u``, ``d`` from ``work``;
    uses ``x``, ``s``, ``y``, ``d_one``, ``d_prev`` and ``cross`` as scratch.
    """
    t, u, x, d = (work.bin_view(name, n) for name in ("t", "u", "x", "d"))
    d_one = work.bin_view("d_one", n)
    tmp = work.mel_view("tmp", n)
    np.multiply(mu, eps, out=tmp)
    tmp -= m
    tmp *= delta
    c0 = col_sum(tmp)
    np.multiply(delta, delta, out=tmp)
    c1 = eps * col_sum(tmp)
    np.multiply(F, delta, out=tmp)
    slope0 = col_sum(tmp)                       # phi'(0) < 0: a descent direction
    np.add(t, u if step is None else step, out=x)
    np.greater(x, 0.0, out=d_one)               # active at a = 1
    np.maximum(x, 0.0, out=x)
    x *= u
    dphi_one = col_sum(x) + c0 + c1
    alpha = np.ones(n)
    # At a converged Newton step phi'(1) is a rounding-level +-1e-15 |phi'(0)|: its sign must not
    # decide between the full step and the search (the kernel rounds differently).
    full = dphi_one <= FULL_STEP_TIE * np.abs(slope0)
    cols = np.flatnonzero(~full)
    k = cols.size
    if 2 * k >= n:
        # most frames search: work on the whole arrays (a frame's search never reads another's
        # columns) rather than gather the columns first
        alpha[cols] = _root_of_dphi(t, u, d, d_one, c0, c1, slope0, dphi_one,
                                    work.bin_view("y", n), work.bin_view("cross", n), step)[cols]
    elif k:
        tc, uc, scratch = (work.bin_view(name, k) for name in ("s", "x", "y"))
        on_zero, on_one = work.bin_view("d_prev", k), work.bin_view("cross", k)
        np.take(t, cols, axis=1, out=tc, mode="clip")
        np.take(u, cols, axis=1, out=uc, mode="clip")
        np.take(d, cols, axis=1, out=on_zero, mode="clip")
        np.take(d_one, cols, axis=1, out=on_one, mode="clip")
        step_cols = None
        if step is not None:
            step_cols = np.take(step, cols, axis=1, out=work.bin_view("w_cols", k), mode="clip")
        alpha[cols] = _root_of_dphi(tc, uc, on_zero, on_one, c0[cols], c1[cols], slope0[cols],
                                    dphi_one[cols], scratch, work.bin_view("d_one", k),
                                    step_cols)
    return alpha, full


ROOT_BUCKETS = 32                 # breakpoints grouped by binary exponent: [2^-31, 2^-30), ..., [1/2, 1]


def _root_of_dphi(t, u, on_zero, on_one, c0, c1, dphi_zero, dphi_one, scratch, crossing,
                  step=None):
    """The root in ``(0, 1)`` of ``phi'(a) = sum_j max(t_j + a u_j, 0) u_j + c0 + a c1``
    (with ``step``: ``max(t_j + a step_j, 0) u_j``, the prior variant; ``step`` is ``u``
    otherwise, and every product below the plain one), for every column.

    Parameters
    ----------
    t, u : ndarray, shape (n_freqs, n)
    on_zero, on_one : ndarray of bool, shape (n_freqs, n)
        ``t > 0`` and ``t + u > 0``, the bins active at ``a = 0`` and at ``a = 1``.
    c0, c1, dphi_zero, dphi_one : ndarray, shape (n,)
        ``c1 > 0``; ``phi'(0) < 0 < phi'(1)``.
    scratch, crossing : ndarray, shape (n_freqs, n), float64 and bool
        Work arrays.

    Returns
    -------
    ndarray, shape (n,)

    ``phi'`` is continuous, increasing and linear between the breakpoints ``b_j = -t_j / u_j``
    of the crossing bins, those active at one end of ``[0, 1]`` only (the others are active on
    all of it or nowhere).  Below every breakpoint the bins active at 0 add ``A + a B`` with
    ``A = c0 + sum t_j u_j``, ``B = c1 + sum u_j^2`` (sums over the bins active at 0; ``A`` is
    ``phi'(0)``, given: ``s.u = (A s).delta``); past a breakpoint the bin switching off
    takes its ``t_j u_j + a u_j^2`` away, a bin switching on adds it.  So running sums over the
    breakpoints in increasing order give ``phi'`` at each of them, and the root lies on the first
    piece where ``phi'`` turns positive, the linear interpolation between the piece's ends (the
    kernel reaches the same root by a secant step and a walk over the pieces; both are exact up
    to rounding).  Sorting every breakpoint would cost more than the rest of the step, and the
    root is often far below most of them (steps of 1e-6 on hard frames), so the breakpoints are
    first summed by binary exponent (``ROOT_BUCKETS`` buckets, an exact partition of ``[0, 1]``),
    ``phi'`` at the bucket edges picks the bucket holding the root, and only that bucket's
    breakpoints are sorted.
    """
    n = t.shape[1]
    a_start = dphi_zero                                  # = c0 + sum_(on_zero) t u, one pass fewer
    np.multiply(u if step is None else step, u, out=scratch)
    scratch *= on_zero
    b_start = c1 + col_sum(scratch)
    # crossing bins (flatnonzero: np.nonzero on 2-D is several times slower)
    bin_, frame = np.divmod(np.flatnonzero(np.not_equal(on_zero, on_one, out=crossing)), n)
    tb, ub = t[bin_, frame], u[bin_, frame]
    sb = ub if step is None else step[bin_, frame]
    brk = -tb / sb                                       # in [0, 1]
    d_a, d_b = tb * ub, sb * ub                          # what each adds where it is active
    switch_off = on_zero[bin_, frame]                    # active up to its breakpoint
    np.negative(d_a, out=d_a, where=switch_off)
    np.negative(d_b, out=d_b, where=switch_off)
    # bucket q >= 1 holds [2^(q - G), 2^(q - G + 1)) (the last one also 1), bucket 0 [0, 2^(1 - G))
    G = ROOT_BUCKETS
    _, bucket = np.frexp(brk)
    bucket += G - 1
    np.maximum(bucket, 0, out=bucket)
    np.minimum(bucket, G - 1, out=bucket)
    bucket[brk == 0.0] = 0
    # edge[q] = (A, B) rows, column f: A and B above every breakpoint of frame f's buckets <= q.
    # (Running sums row after row, A and B side by side so that one call adds both: np.cumsum
    # along a short axis is slow and holds the GIL, and each call costs a GIL hand-over when
    # threads solve chunks side by side; np.bincount returns integers when there is nothing to
    # count.)
    slot = bucket * (2 * n) + frame
    edge = np.bincount(np.concatenate((slot, slot + n)), np.concatenate((d_a, d_b)), 2 * G * n)
    edge = edge.astype(np.float64, copy=False).reshape(G, 2, n)
    a_edge, b_edge = edge[:, 0], edge[:, 1]
    a_edge[0] += a_start
    b_edge[0] += b_start
    for q in range(1, G):
        np.add(edge[q - 1], edge[q], out=edge[q])
    edges = np.ldexp(1.0, np.arange(1 - G, 1))           # upper edge of bucket q: 2^(q + 1 - G)
    edge_values = edges[:, None] * b_edge                # phi' there (the last: phi'(1))
    edge_values += a_edge
    edge_values[-1] = dphi_one
    root_bucket = np.argmax(edge_values > 0.0, axis=0)
    cols = np.arange(n)
    below = np.maximum(root_bucket - 1, 0)
    first = root_bucket == 0
    lower = np.where(first, 0.0, edges[below])
    lower_value = np.where(first, dphi_zero, edge_values[below, cols])
    a_lower = np.where(first, a_start, a_edge[below, cols])
    b_lower = np.where(first, b_start, b_edge[below, cols])
    upper, upper_value = edges[root_bucket], edge_values[root_bucket, cols]
    # the root's bucket: its breakpoints in order, frame by frame
    inside = np.flatnonzero(bucket == root_bucket[frame])
    order = inside[np.lexsort((brk[inside], frame[inside]))]
    frame, brk, d_a, d_b = frame[order], brk[order], d_a[order], d_b[order]
    counts = np.bincount(frame, minlength=n)
    width = int(counts.max(initial=0))
    position = np.arange(frame.size) - (np.cumsum(counts) - counts)[frame]
    # column f, row i + 1: A, B past its bucket's i-th breakpoint (padding: no change)
    run = np.zeros((width + 1, 2, n))
    a_run, b_run = run[:, 0], run[:, 1]
    a_run[0], b_run[0] = a_lower, b_lower
    a_run[position + 1, frame] = d_a
    b_run[position + 1, frame] = d_b
    if width <= 32:
        for i in range(1, width + 1):
            np.add(run[i - 1], run[i], out=run[i])
    else:                                                # (the same additions, in one call)
        np.cumsum(run, axis=0, out=run)
    # points: the bucket's lower edge, its breakpoints, its upper edge (padding: the upper edge)
    points = np.empty((width + 2, n))
    points[0] = lower
    points[1:] = upper
    points[position + 1, frame] = brk
    values = np.empty((width + 2, n))
    values[0] = lower_value
    np.multiply(points[1:-1], b_run[:-1], out=values[1:-1])
    values[1:-1] += a_run[:-1]
    padding = np.arange(width)[:, None] >= counts
    np.copyto(values[1:-1], upper_value, where=padding)
    values[-1] = upper_value
    right = np.maximum(np.argmax(values > 0.0, axis=0), 1)
    p0, p1 = points[right - 1, cols], points[right, cols]
    v0, v1 = values[right - 1, cols], values[right, cols]
    # (v0 <= 0 < v1 where phi'(1) > 0; a column not searched, solved alongside, may have neither)
    gap = v1 - v0
    alpha = p0 - v0 * np.divide(p1 - p0, gap, out=np.zeros(n), where=gap > 0.0)
    return np.minimum(np.maximum(alpha, p0), p1)
