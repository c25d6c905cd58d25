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
bracket, then the root of the linear piece holding it, a handful of passes; the compiled CPU
loop: the kernel's rounds over the crossing bins alone).  The full
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
from .chunks import (CHUNK_ELEMENTS, CHUNKS_PER_WORKER, MIN_CHUNK_ELEMENTS, THREAD_CHUNK_ELEMENTS,
                     chunk_bounds, solve, solve_into)
from .iteration import (COMPACT_DEAD, EPS_REL, FLOOR_KKT, FLOOR_RATIO, FLOOR_WINDOW, FULL_STEP_TIE,
                        J_REFRESH, ROOT_BUCKETS, T_REFRESH, step_bound)
from .plan import NnlsPlan, Prior
from .work import KEPT_PLANS

# The parts: plan.py (per-filterbank constants, the prior's inputs), iteration.py (the NumPy
# iteration on one chunk's frames), tridiagonal.py (its systems), work.py (work arrays and what is
# kept between calls), chunks.py (the batch in chunks on worker threads).  The tuning constants
# are read where they are used: set them on those modules (nnls.iteration.T_REFRESH, ...).
__all__ = ["NnlsPlan", "Prior", "solve", "solve_into", "step_bound", "chunk_bounds", "EPS_REL",
           "FULL_STEP_TIE", "FLOOR_KKT", "FLOOR_RATIO", "FLOOR_WINDOW", "T_REFRESH", "J_REFRESH",
           "COMPACT_DEAD", "ROOT_BUCKETS", "CHUNK_ELEMENTS", "THREAD_CHUNK_ELEMENTS",
           "MIN_CHUNK_ELEMENTS", "CHUNKS_PER_WORKER", "KEPT_PLANS"]
