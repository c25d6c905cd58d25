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
    mu_0 = (A A.T + eps I)^-1 m        # cached factorisation; s(mu_0) is torchaudio 2.x's lstsq+relu
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
        alpha = line_search(phi'(a) = max(t + a u, 0).u + eps (mu + a delta).delta - m.delta,
                            phi'(0) = F.delta)
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

``line_search`` takes the full Newton step when ``phi'(1) <= 1e-12 |phi'(0)|`` (q still decreasing
along the whole step, up to rounding: the sign of a rounding-level ``phi'(1)`` must not pick the
step) and otherwise finds the root of the monotone, piecewise linear ``phi'`` on ``(0, 1)`` by
safeguarded regula falsi (Illinois), keeping the last point with ``phi' <= 0``: every step
decreases ``q``.  On a piece where the active set is right the Newton step is exact, so the
iteration ends in a handful of steps (2-5 on average, at most 10-20, on real audio).

The arithmetic is float64 for float32 and float64 input alike (a frame's state is tiny; the
dual is ill-conditioned by design), and the result is cast to the input dtype.  Frames are
columns (vectors along axis 0, as in a mel spectrogram), so every step is a vectorised operation
across frames and no operation mixes columns: a frame gives the same bits alone or in any batch,
and a converged frame drops out of the active set and costs nothing further.
"""
from __future__ import annotations

import numpy as np

from ._rows import col_sum

EPS_REL = 1e-9
LINE_SEARCH_STEPS = 30
LINE_SEARCH_RTOL = 1e-1
FULL_STEP_TIE = 1e-12            # phi'(1) within this fraction of |phi'(0)|: a full step
FLOOR_KKT = 1e-6                  # the rounding-floor rule applies below this relative KKT residual
FLOOR_RATIO = 0.5                 # ... and stops a frame that did not halve it ...
FLOOR_WINDOW = 3                  # ... within the last FLOOR_WINDOW iterates
CHUNK_ELEMENTS = 1 << 18          # n_freqs x frames per work array: 2 MB of float64, cache-sized


def step_bound(n_mels):
    """Newton steps a frame may take whatever ``max_iter`` says: ``4 n_mels + 32``.

    Each step of the semismooth Newton method changes the active set or ends the solve; in
    practice a frame needs 2-28 steps (module docstring).  The bound only keeps a pathological
    frame from holding its warp (or the CPU loop) for ``max_iter = 100000`` steps.
    """
    return 4 * int(n_mels) + 32


class NnlsPlan:
    """Per-filterbank constants of the nnls iteration, computed once.

    Attributes
    ----------
    eps : float
        Regulariser (absolute).
    w : tuple of ndarray
        ``(lo, hi, w_lo, w_hi)`` of :class:`cumel.filterbank.SparseMel` in float64.
    start_inv_pivot, start_upper_scaled, start_upper : ndarray, shape (n_mels,)
        Thomas factorisation of ``A A.T + eps I``: ``1 / pivot_k``, ``upper_k / pivot_k`` and
        ``upper_k``.
    """

    def __init__(self, sparse):
        self.sparse = sparse
        self.n_mels = sparse.n_mels
        self.w = sparse.arrays(np, np.float64)
        diag, upper = sparse.tridiag(np.ones(sparse.n_freqs), np, self.w)
        self.eps = EPS_REL * float(diag.max()) if diag.max() > 0 else EPS_REL
        self.start_upper = upper
        self.start_inv_pivot, self.start_upper_scaled = _thomas_factor(diag + self.eps, upper)

    def start(self, m):
        """``mu_0 = (A A.T + eps I)^-1 m`` for columns ``m`` (n_mels, N)."""
        return _thomas_solve(self.start_inv_pivot, self.start_upper_scaled, self.start_upper, m)


# Tridiagonal systems, one per column, vectors along axis 0: every step of a sweep is one
# vectorised operation over the frames.

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


def _thomas_solve(inv_pivot, upper_scaled, upper, rhs):
    """Solve ``T x = rhs`` (rhs (n, ...)) with the factors of :func:`_thomas_factor` (n,)."""
    y = np.array(rhs, dtype=np.float64)           # a copy
    y[0] *= inv_pivot[0]
    for k in range(1, y.shape[0]):
        y[k] -= upper[k - 1] * y[k - 1]
        y[k] *= inv_pivot[k]
    for k in range(y.shape[0] - 2, -1, -1):
        y[k] -= upper_scaled[k] * y[k + 1]
    return y


def _tridiag_solve(diag, upper, rhs):
    """Solve ``T_i x_i = rhs_i`` for a stack of symmetric tridiagonal ``T_i`` (all (n, N)).

    Cyclic reduction: about 2 log2(n) vectorised steps where the Thomas algorithm takes 2n,
    which is what costs in NumPy (the kernel's lane 0 runs Thomas: one thread, no step overhead).
    Both are Gaussian elimination without pivoting, stable because every ``T_i`` is symmetric
    positive definite, and they give the same solution up to rounding.
    """
    lower = np.zeros_like(upper)
    lower[1:] = upper[:-1]
    return _cyclic_reduction(lower, diag, upper, rhs)


def _cyclic_reduction(lower, diag, upper, rhs):
    """Solve ``lower[i] x[i-1] + diag[i] x[i] + upper[i] x[i+1] = rhs[i]`` along axis 0.

    Odd-even reduction: eliminating the even rows leaves a tridiagonal system in the odd rows,
    half the size; solve it recursively, then recover the even rows. ``lower[0]`` and
    ``upper[-1]`` must be 0.
    """
    n = diag.shape[0]
    if n == 1:
        return rhs / diag
    odd, left = slice(1, None, 2), slice(0, -1, 2)    # odd rows and their left neighbours
    n_odd = (n - 1 + 1) // 2
    right = slice(2, None, 2)                          # right neighbours (one fewer if n is even)
    pad = n_odd - len(range(*right.indices(n)))

    def right_of(a, fill):
        r = a[right]
        return np.concatenate([r, np.full((pad,) + a.shape[1:], fill)]) if pad else r

    a_left = -lower[odd] / diag[left]
    a_right = -upper[odd] / right_of(diag, 1.0)
    x_odd = _cyclic_reduction(
        a_left * lower[left],
        diag[odd] + a_left * upper[left] + a_right * right_of(lower, 0.0),
        a_right * right_of(upper, 0.0),
        rhs[odd] + a_left * rhs[left] + a_right * right_of(rhs, 0.0))
    x = np.empty_like(rhs)
    x[odd] = x_odd
    even = rhs[0::2].copy()
    even[1:] -= lower[2::2] * x_odd[:even.shape[0] - 1]
    even[:x_odd.shape[0]] -= upper[0::2][:x_odd.shape[0]] * x_odd
    x[0::2] = even / diag[0::2]
    return x


def _coldot(a, b):
    """Per-frame dot products of (n, N) columns (bit-identical alone or in any batch)."""
    return col_sum(a * b)


def _norm(x):
    return np.sqrt(_coldot(x, x))


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


def solve_into(plan, mel, out, *, max_iter, tolerance_loss, tolerance_change):
    """Solve every frame of ``mel`` into ``out``, ``CHUNK_ELEMENTS // n_freqs`` frames at a time.

    Memory: ``out`` is the only array that grows with the batch (besides two numbers a frame);
    each chunk gathers its frames from ``mel`` in float64, solves them and writes them into
    ``out`` in ``out.dtype``.  Chunks cannot change a result, since no operation mixes frames.

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
    n_frames = B * T
    chunk = max(1, CHUNK_ELEMENTS // plan.sparse.n_freqs)
    bounds = np.linspace(0, n_frames, -(-n_frames // chunk) + 1).astype(np.int64)  # equal chunks
    for a, b in zip(bounds[:-1], bounds[1:]):
        bi, ti = np.divmod(np.arange(a, b), T)                  # frame f = b * T + t
        m = mel[bi, :, ti].T.astype(np.float64)                 # (n_mels, n): gathered, a copy
        s, iterations[bi, ti], kkt[bi, ti] = _solve_frames(plan, m, cap, tolerance_loss,
                                                           tolerance_change)
        out[bi, :, ti] = s.T
    return iterations, kkt


def _solve_frames(plan, m, cap, tolerance_loss, tolerance_change):
    """The iteration of the module docstring on the columns of ``m`` (float64, overwritten)."""
    sp, w, eps = plan.sparse, plan.w, plan.eps
    N = m.shape[1]
    # Exact rescaling by a power of two: every frame's largest |m| lands in [0.5, 1), so no
    # norm under- or overflows and s(c m) = c s(m) whatever the scale c.
    _, exponent = np.frexp(np.abs(m).max(axis=0))
    np.ldexp(m, -exponent, out=m)
    mu = plan.start(m)
    m_norm = _norm(m)
    iterations = np.zeros(N, dtype=np.int64)
    kkt = np.zeros(N)
    active = np.flatnonzero(m_norm > 0)
    mu[:, m_norm == 0] = 0.0
    # exact[i]: the last step of frame i was a full Newton step; if its active set is unchanged,
    # F is zero up to rounding (Newton is exact on a piece of the piecewise linear F).
    exact = np.zeros(N, dtype=bool)
    d_prev = np.zeros((sp.n_freqs, N), dtype=bool)
    recent = np.full((FLOOR_WINDOW, N), np.inf)      # kkt of the last FLOOR_WINDOW iterates
    stalled = np.zeros(N, dtype=bool)                 # the last step moved nothing: stop here
    for it in range(cap + 1):
        if active.size == 0:
            break
        everyone = active.size == N               # no column gathers while every frame runs
        mu_a = mu if everyone else mu[:, active]
        m_a = m if everyone else m[:, active]
        t = sp.rmatvec(mu_a, np, w)
        positive = t > 0
        s_a = np.maximum(t, 0.0)
        F = sp.matvec(s_a, np, w) + eps * mu_a - m_a
        rel = _norm(F) / m_norm[active]
        kkt[active] = rel
        # a non-finite frame stops too (the transform then raises): it can never meet a rule
        done = (rel <= tolerance_loss) | ~np.isfinite(rel) | (it == cap) | stalled[active]
        done |= (rel <= FLOOR_KKT) & (rel > FLOOR_RATIO * recent[:, active].min(axis=0))
        recent[it % FLOOR_WINDOW, active] = rel
        check = np.flatnonzero(exact[active] & ~done)      # full step last time: same active set?
        if check.size:
            done[check] = (positive[:, check] == d_prev[:, active[check]]).all(axis=0)
        if done.any():
            keep = ~done
            active = active[keep]
            mu_a, m_a, t, s_a, F, positive = (a[:, keep] for a in (mu_a, m_a, t, s_a, F, positive))
            if active.size == 0:
                break
        iterations[active] += 1
        diag, upper = sp.tridiag(positive, np, w)
        delta = -_tridiag_solve(diag + eps, upper, F)     # J delta = -F
        u = sp.rmatvec(delta, np, w)
        alpha = _line_search(t, u, mu_a, delta, m_a, eps, _coldot(F, delta))
        mu[:, active] = mu_a + alpha * delta
        exact[active] = alpha == 1.0
        d_prev[:, active] = positive
        # Stalled: the step moves the unclamped spectrum t = A.T mu by a negligible amount
        # compared with the answer s = max(t, 0). (Not compared with ||t||: on an inconsistent
        # frame the clamped bins of t grow like residual / eps and dwarf any useful step.)
        # The frame stops at the top of the next pass, so that its kkt is the returned iterate's.
        stalled[active] = alpha * _norm(u) <= tolerance_change * _norm(s_a)
    s = np.maximum(sp.rmatvec(mu, np, w), 0)
    return np.ldexp(s, exponent), iterations, kkt


class _LineFunction:
    """``phi'(alpha)``, the derivative of ``q`` along ``delta``, for a stack of frames.

    ``phi'(a) = max(t + a u, 0).u + c0 + a c1`` with ``c0 = (eps mu - m).delta`` and
    ``c1 = eps delta.delta``: monotone and piecewise linear in ``a``.
    """

    def __init__(self, t, u, mu, delta, m, eps):
        self.t, self.u = t, u
        self.c0 = _coldot(eps * mu - m, delta)
        self.c1 = eps * _coldot(delta, delta)

    def __call__(self, alpha):
        return _coldot(np.maximum(self.t + alpha * self.u, 0), self.u) + self.c0 + alpha * self.c1

    def keep(self, cols):
        """The same function restricted to the frames ``cols`` (copies them once)."""
        kept = object.__new__(_LineFunction)
        kept.t, kept.u, kept.c0, kept.c1 = self.t[:, cols], self.u[:, cols], self.c0[cols], self.c1[cols]
        return kept


def _line_search(t, u, mu, delta, m, eps, slope0):
    """Step length in (0, 1] along the Newton direction; every frame's own search.

    Full step where ``phi'(1) <= FULL_STEP_TIE |phi'(0)|`` (zero up to rounding); elsewhere regula falsi (Illinois) on the bracket
    ``[0, 1]`` keeping ``phi'(lo) <= 0 < phi'(hi)``, until ``phi'`` at the lower end is within
    ``LINE_SEARCH_RTOL`` of ``slope0 = phi'(0) = F.delta`` or ``LINE_SEARCH_STEPS`` rounds;
    returns ``lo``.
    """
    dphi = _LineFunction(t, u, mu, delta, m, eps)
    alpha = np.ones(t.shape[1])
    hi_val = dphi(alpha)
    # At a converged Newton step phi'(1) is a rounding-level +-1e-15 |phi'(0)|: its sign must not
    # decide between the full step and the search (the kernel rounds differently).
    cols = np.flatnonzero(hi_val > FULL_STEP_TIE * np.abs(slope0))
    if cols.size == 0:
        return alpha
    dphi = dphi.keep(cols)                        # the search runs on these frames only
    lo, hi = np.zeros(cols.size), np.ones(cols.size)
    lo_val, hi_val = slope0[cols], hi_val[cols]      # phi'(0) = F.delta < 0: a descent direction
    target = LINE_SEARCH_RTOL * lo_val            # negative: stop once phi'(lo) >= target
    side = np.zeros(cols.size, dtype=np.int8)     # which end moved last: +1 lo, -1 hi
    for _ in range(LINE_SEARCH_STEPS):
        c = lo - lo_val * (hi - lo) / (hi_val - lo_val)
        c = np.clip(c, lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo))
        c_val = dphi(c)
        below = c_val <= 0
        # Illinois: when the same end moves twice running, halve the other end's value
        hi_val = np.where(below, np.where(side > 0, hi_val * 0.5, hi_val), c_val)
        lo_val = np.where(below, c_val, np.where(side < 0, lo_val * 0.5, lo_val))
        side = np.where(below, 1, -1).astype(np.int8)
        lo = np.where(below, c, lo)
        hi = np.where(below, hi, c)
        done = below & (c_val >= target)
        if done.any():
            alpha[cols[done]] = lo[done]
            keep = np.flatnonzero(~done)
            if keep.size == 0:
                return alpha
            dphi = dphi.keep(keep)
            cols, lo, hi, lo_val, hi_val, target, side = (
                a[keep] for a in (cols, lo, hi, lo_val, hi_val, target, side))
    alpha[cols] = lo
    return alpha
